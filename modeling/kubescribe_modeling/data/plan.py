"""Corpus planning: which sentence is spoken by which voice, at which speed, in which split.

Pure and deterministic: :func:`plan_corpus` maps a :class:`CorpusConfig` to a list of
:class:`Utterance` without touching the disk or espeak-ng. Rules it guarantees:

* the test split is spoken only by :data:`HELD_OUT_VOICES`, whose variants never appear in
  train or dev;
* test sentences (held-out templates from a fixed seed, and the independent hand-written set)
  never appear in train or dev, and dev sentences never appear in train;
* nor do the independent dev sentences (``resources/independent_dev.txt``), on which the
  sampling weights of the open-vocabulary text are tuned (:mod:`.tuning`);
* a ``telephone`` share of the train and dev clips goes through the narrowband telephone
  channel (8 kHz, G.711 μ-law or A-law, chosen from the clip's own seed); test clips never do.

:func:`audit_plan` checks a plan (one read from a file, perhaps made by an older version)
against these rules.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from kubescribe_runtime.g711 import Law
from pydantic import BaseModel, Field, model_validator

from kubescribe_modeling.data.open_vocab import (
    everyday_sentences,
    grammar_sentence,
    vocabulary,
    word_sequence,
)
from kubescribe_modeling.data.resources import load_lines
from kubescribe_modeling.data.templates import template_sentence
from kubescribe_modeling.data.tuning import dev_sentences
from kubescribe_modeling.data.voices import (
    EXCLUDED_TWINS,
    HELD_OUT_VARIANTS,
    HELD_OUT_VOICES,
    train_voices,
)
from kubescribe_modeling.text import normalize_text

__all__ = [
    "TEST_TEMPLATE_POOL",
    "TEST_TEXT_SEED",
    "CorpusConfig",
    "Utterance",
    "audit_plan",
    "estimate_seconds",
    "held_out_template_sentences",
    "independent_sentences",
    "plan_corpus",
]

Split = Literal["train", "dev", "test"]
Source = Literal["template", "open", "independent"]

#: The held-out template sentences come from this fixed seed, whatever ``--seed`` is, so the
#: committed test set stays unseen by every corpus the command makes.
TEST_TEXT_SEED = 20_260_101
#: How many held-out template sentences are reserved (never trained on), whatever the size of
#: the test split: the committed test set draws its template sentences from the same pool.
TEST_TEMPLATE_POOL = 300


class CorpusConfig(BaseModel):
    """What to generate. ``hours`` (of train audio) or ``utterances`` (train count)."""

    hours: float | None = Field(default=18.0, gt=0)
    utterances: int | None = Field(default=None, gt=0)
    seed: int = 0
    template_fraction: float = Field(default=0.4, ge=0, le=1)
    #: Share of the open-vocabulary text by kind: random word sequences, grammar, hand-written.
    open_mix: tuple[float, float, float] = (0.65, 0.1, 0.25)
    dev_fraction: float = Field(default=0.02, ge=0, lt=1)
    test_templates: int = Field(default=300, ge=0)
    test_independent_voices: int = Field(default=len(HELD_OUT_VOICES), ge=0)
    #: How many independent sentences the test split uses (None: all of them).
    test_independent: int | None = Field(default=None, ge=0)
    speed: tuple[int, int] = (130, 210)
    pitch: tuple[int, int] = (25, 75)
    augment: float = Field(default=1.0, ge=0, le=2)
    test_augment: float = Field(default=0.0, ge=0, le=2)
    #: Share of train and dev clips passed through the narrowband telephone channel.
    telephone: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _one_size(self) -> CorpusConfig:
        if self.utterances is not None:
            self.hours = None
        if self.hours is None and self.utterances is None:
            raise ValueError("give hours or utterances")
        if any(w < 0 for w in self.open_mix) or sum(self.open_mix) <= 0:
            raise ValueError("open_mix weights must be non-negative and not all zero")
        if self.speed[0] > self.speed[1] or self.pitch[0] > self.pitch[1]:
            raise ValueError("speed and pitch ranges must be (low, high)")
        return self


@dataclass(frozen=True)
class Utterance:
    id: str
    split: Split
    source: Source
    text: str  # normalised transcript, also what espeak-ng speaks
    voice: str
    speed: int
    pitch: int
    seed: int  # augmentation seed
    augment: float  # augmentation strength, 0 = clean
    telephone: Law | None = None  # the narrowband channel's G.711 law, None = wideband

    @property
    def path(self) -> str:
        """Relative path of the clip inside the corpus directory."""
        return f"{self.split}/{self.id[-3:]}/{self.id}.wav"


@dataclass
class _Texts:
    """Streams of normalised sentences that skip anything in ``exclude``."""

    rng: random.Random
    exclude: set[str] = field(default_factory=set)

    def draw(self, make: Callable[[random.Random], str]) -> str:
        for _ in range(1000):
            text = normalize_text(make(self.rng))
            if text and text not in self.exclude:
                return text
        raise RuntimeError("text generator keeps producing excluded sentences")


def independent_sentences() -> tuple[str, ...]:
    """The independent held-out set, normalised (test only)."""
    return tuple(normalize_text(s) for s in load_lines("independent_test.txt"))


def held_out_template_sentences(n: int) -> tuple[str, ...]:
    """``n`` distinct held-out template sentences from the fixed test seed (normalised)."""
    rng, seen, out = random.Random(TEST_TEXT_SEED), set[str](), list[str]()
    for _ in range(n * 100):
        if len(out) == n:
            break
        text = normalize_text(template_sentence(rng))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return tuple(out)


def estimate_seconds(text: str, speed: int) -> float:
    """Rough spoken duration of ``text`` at ``speed`` words per minute (for planning only)."""
    return len(text.split()) * 60.0 / speed * 0.94 + 0.37  # calibrated on espeak-ng 1.51


def _open_maker(config: CorpusConfig) -> Callable[[random.Random], str]:
    """A text maker that picks a kind of open-vocabulary text by ``open_mix``."""
    everyday = everyday_sentences()
    vocab = vocabulary() if config.open_mix[0] > 0 else None

    def make(r: random.Random) -> str:
        kind = r.choices((0, 1, 2), weights=config.open_mix)[0]
        if kind == 0 and vocab is not None:
            return word_sequence(r, vocab)
        if kind == 1 or not everyday:
            return grammar_sentence(r)
        return r.choice(everyday)

    return make


def _telephone(seed: int, share: float) -> Law | None:
    """The clip's telephone law, drawn from its own seed (the plan's stream stays as it was)."""
    if share <= 0:
        return None
    r = random.Random(seed)
    return r.choice(("pcmu", "pcma")) if r.random() < share else None


def audit_plan(plan: Sequence[Utterance]) -> list[str]:
    """How ``plan`` breaks the split rules (empty when it keeps them)."""
    unseen = {
        *held_out_template_sentences(TEST_TEMPLATE_POOL),
        *independent_sentences(),
        *dev_sentences(),
    }
    problems = []
    for u in plan:
        variant = u.voice.partition("+")[2]
        if u.split == "test":
            if u.voice not in HELD_OUT_VOICES:
                problems.append(f"{u.id}: test clip in voice {u.voice}, not a held-out voice")
            if u.telephone is not None:
                problems.append(f"{u.id}: test clip through the telephone channel")
        elif variant in HELD_OUT_VARIANTS | EXCLUDED_TWINS:
            problems.append(f"{u.id}: {u.split} clip in held-out voice (or its twin) {u.voice}")
        elif u.text in unseen:
            problems.append(f"{u.id}: {u.split} clip speaks a held-out sentence: {u.text!r}")
    return problems


def _sources(
    config: CorpusConfig, rng: random.Random
) -> Iterator[tuple[Source, Callable[[random.Random], str]]]:
    open_make = _open_maker(config)
    while True:
        if rng.random() < config.template_fraction:
            yield "template", template_sentence
        else:
            yield "open", open_make


def plan_corpus(config: CorpusConfig) -> list[Utterance]:
    """Every utterance of the corpus, test first, then dev, then train."""
    rng = random.Random(config.seed)
    voices = train_voices()
    held_out = list(HELD_OUT_VOICES)
    plan: list[Utterance] = []

    def add(split: Split, source: Source, text: str, voice: str, strength: float) -> None:
        speed, pitch, seed = (
            rng.randint(*config.speed),
            rng.randint(*config.pitch),
            rng.randrange(2**31),
        )
        plan.append(
            Utterance(
                id=f"{split}-{len(plan):06d}",
                split=split,
                source=source,
                text=text,
                voice=voice,
                speed=speed,
                pitch=pitch,
                seed=seed,
                augment=strength,
                telephone=None if split == "test" else _telephone(seed, config.telephone),
            )
        )

    test_templates = held_out_template_sentences(config.test_templates)
    independent = independent_sentences()
    for text in test_templates:
        add("test", "template", text, rng.choice(held_out), config.test_augment)
    for i, text in enumerate(independent[: config.test_independent]):
        for k in range(config.test_independent_voices):
            add("test", "independent", text, held_out[(i + k) % len(held_out)], config.test_augment)

    reserved = held_out_template_sentences(max(TEST_TEMPLATE_POOL, config.test_templates))
    texts = _Texts(
        random.Random(rng.randrange(2**31)),
        exclude={*reserved, *independent, *dev_sentences()},
    )
    sources = _sources(config, rng)
    # Size of train: by count, or by estimated duration.
    if config.utterances is not None:
        n_train = config.utterances
        n_dev = max(1, round(n_train * config.dev_fraction)) if config.dev_fraction else 0
        budget = None
    else:
        assert config.hours is not None
        budget = config.hours * 3600.0
        n_train = -1
        n_dev = max(1, round(budget / 4.0 * config.dev_fraction)) if config.dev_fraction else 0

    # Dev: no hand-written sentences (their pool is small: train keeps them all).
    dev_mix = config.model_copy(update={"open_mix": (*config.open_mix[:2], 0.0)})
    dev_sources = _sources(dev_mix, rng) if sum(config.open_mix[:2]) > 0 else sources
    for _ in range(n_dev):
        source, make = next(dev_sources)
        text = texts.draw(make)
        texts.exclude.add(text)
        add("dev", source, text, rng.choice(voices), config.augment)

    total, count = 0.0, 0
    while (budget is not None and total < budget) or (budget is None and count < n_train):
        source, make = next(sources)
        text = texts.draw(make)
        add("train", source, text, rng.choice(voices), config.augment)
        total += estimate_seconds(text, plan[-1].speed)
        count += 1
    return plan
