"""The espeak-ng voice catalogue and the voices held out for testing.

A voice is ``LANGUAGE+VARIANT`` as espeak-ng's ``-v`` option takes it. The held-out voices'
variants are never used with any language in train or dev, so the test set measures a
speaker the model has not heard.
"""

from __future__ import annotations

__all__ = ["HELD_OUT_VARIANTS", "HELD_OUT_VOICES", "LANGUAGES", "TRAIN_VARIANTS", "train_voices"]

#: English accents espeak-ng ships without mbrola.
LANGUAGES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)

#: Voices used only in the test split (and the committed test set).
HELD_OUT_VOICES: tuple[str, ...] = ("en-us+f4", "en-gb+m5")
HELD_OUT_VARIANTS: frozenset[str] = frozenset(v.split("+", 1)[1] for v in HELD_OUT_VOICES)

#: Variants (speaker characteristics) for train and dev; novelty voices (robots, whisper,
#: croak) are left out because they do not sound like people.
TRAIN_VARIANTS: tuple[str, ...] = tuple(
    v
    for v in (
        *(f"m{i}" for i in range(1, 9)),
        *(f"f{i}" for i in range(1, 6)),
        "klatt",
        "klatt2",
        "klatt3",
        "klatt4",
        "Alicia",
        "Andy",
        "Annie",
        "Denis",
        "Gene",
        "Jacky",
        "Lee",
        "Michael",
        "Mike",
        "adam",
        "aunty",
        "belinda",
        "benjamin",
        "boris",
        "caleb",
        "david",
        "ed",
        "edward",
        "grandma",
        "grandpa",
        "iven",
        "john",
        "linda",
        "max",
        "michel",
        "norbert",
        "paul",
        "quincy",
        "rob",
        "robert",
        "shelby",
        "steph",
        "travis",
        "victor",
        "zac",
    )
    if v not in HELD_OUT_VARIANTS
)


def train_voices() -> tuple[str, ...]:
    """Every language × train variant: the voices train and dev draw from."""
    return tuple(f"{lang}+{variant}" for lang in LANGUAGES for variant in TRAIN_VARIANTS)
