"""The espeak-ng voice catalogue and the voices held out for testing.

A voice is ``LANGUAGE+VARIANT`` as espeak-ng's ``-v`` option takes it. The held-out voices'
variants are never used with any language in train or dev, so the test set measures a
speaker the model has not heard. A variant's timbre is its formant table (espeak-ng's
``voices/!v/NAME`` files); two variants with the same formants 1–8 are the same speaker at
another pitch, so :func:`formant_twins` finds train variants that copy a held-out one (``aunty``
is ``f4``'s: it trained demo model 2.0.0 and is excluded since).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "EXCLUDED_TWINS",
    "HELD_OUT_VARIANTS",
    "HELD_OUT_VOICES",
    "LANGUAGES",
    "TRAIN_VARIANTS",
    "Formants",
    "formant_twins",
    "parse_formants",
    "train_voices",
]

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

#: Variants whose formants 1–8 equal a held-out variant's (espeak-ng 1.51): never trained on.
EXCLUDED_TWINS: frozenset[str] = frozenset({"aunty"})  # f4's formants, other pitch and flutter

#: Variants (speaker characteristics) for train and dev; novelty voices (robots, whisper,
#: croak) are left out because they do not sound like people, and so are held-out variants
#: and their formant twins.
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
    if v not in HELD_OUT_VARIANTS | EXCLUDED_TWINS
)


def train_voices() -> tuple[str, ...]:
    """Every language × train variant: the voices train and dev draw from."""
    return tuple(f"{lang}+{variant}" for lang in LANGUAGES for variant in TRAIN_VARIANTS)


#: Formant number -> its numbers in the variant file (frequency, height, width[, freq add]).
Formants = dict[int, tuple[int, ...]]

#: The formants that make a speaker's timbre (espeak-ng's formant 0 only adds a low-frequency
#: component).
_TIMBRE = range(1, 9)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def parse_formants(variant_file: str) -> Formants:
    """The ``formant N ...`` lines of an espeak-ng voice variant file."""
    out: Formants = {}
    for line in variant_file.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "formant" and all(_is_int(p) for p in parts[1:]):
            out[int(parts[1])] = tuple(int(p) for p in parts[2:])
    return out


def formant_twins(
    formants: dict[str, Formants], train: Iterable[str], held_out: Iterable[str]
) -> list[tuple[str, str]]:
    """(train variant, held-out variant) pairs whose formants 1–8 are identical."""

    def timbre(name: str) -> tuple[tuple[int, ...] | None, ...]:
        return tuple(formants[name].get(k) for k in _TIMBRE)

    held = list(held_out)
    return [(t, h) for t in train for h in held if t != h and timbre(t) == timbre(h)]
