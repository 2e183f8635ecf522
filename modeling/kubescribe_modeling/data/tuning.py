"""Tuning the open-vocabulary sampling weights on the independent dev split, never on test.

:data:`~kubescribe_modeling.data.open_vocab.DRAW_WEIGHTS` decides how a random word sequence
draws its words (true frequency, the nearly uniform everyday core, the flattened whole list).
The weights are chosen by how well the training text covers the words of
``resources/independent_dev.txt``: everyday sentences written by hand for that purpose alone,
apart from every training source and from the independent test set, which this module never
reads (a test holds it to that). Up to demo model 2.0.0 the weights were tuned on the test set.

    python -m kubescribe_modeling.data.tuning      # the table, and the weights it picks

The objective is the dev split's out-of-vocabulary rate against the words of the hand-written
training sentences plus ``budget_words`` words drawn with the candidate weights (about what the
word sequences of a 40-hour corpus hold), averaged over ``repeats`` draws. Every candidate
draws from the same random streams, so their differences are the weights', not the noise's.
The true-frequency share never goes below ``min_true``: it gives the sequences the rhythm of
function words, which coverage alone does not value.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kubescribe_modeling.data.open_vocab import Vocabulary, everyday_sentences, vocabulary
from kubescribe_modeling.data.resources import load_lines
from kubescribe_modeling.text import normalize_text

__all__ = ["DEV_RESOURCE", "Tuning", "dev_sentences", "oov_rate", "tune_draw_weights"]

DEV_RESOURCE = "independent_dev.txt"

Weights = tuple[float, float, float]


@dataclass(frozen=True)
class Tuning:
    """The chosen weights and every candidate's dev out-of-vocabulary rate."""

    weights: Weights
    oov: float
    table: tuple[tuple[Weights, float], ...]


def dev_sentences() -> tuple[str, ...]:
    """The independent dev split, normalised: tuning reads it; training and test never do."""
    return tuple(normalize_text(s) for s in load_lines(DEV_RESOURCE))


def oov_rate(covered: set[str], sentences: Iterable[str]) -> float:
    """Share of the words of ``sentences`` (running words, not types) missing from ``covered``."""
    words = [w for s in sentences for w in s.split()]
    return sum(w not in covered for w in words) / len(words) if words else 0.0


def candidate_weights(step: float = 0.1, min_true: float = 0.3) -> list[Weights]:
    """Every (true, core, flat) on a grid of ``step`` that sums to 1, true share >= min_true."""
    n = round(1 / step)
    out = []
    for t, c in itertools.product(range(n + 1), repeat=2):
        f = n - t - c
        if f >= 0 and t / n >= min_true - 1e-9:
            out.append((round(t / n, 6), round(c / n, 6), round(f / n, 6)))
    return out


def _draw(vocab: Vocabulary, weights: Weights, budget: int, seed: int) -> set[str]:
    """The words of ``budget`` draws as :meth:`Vocabulary.sample` makes them, vectorised."""
    rng = np.random.default_rng(seed)
    words = np.asarray(vocab.words)
    counts = rng.multinomial(budget, weights)
    drawn: set[str] = set()
    for cum, count in zip((vocab.cum_true, vocab.cum_core, vocab.cum_flat), counts, strict=True):
        table = np.asarray(cum)
        picks = np.searchsorted(table, rng.random(count) * table[-1], side="right")
        drawn.update(words[np.minimum(picks, table.size - 1)].tolist())
    return drawn


def tune_draw_weights(
    dev: Sequence[str] | None = None,
    *,
    vocab: Vocabulary | None = None,
    written: Iterable[str] | None = None,
    budget_words: int = 130_000,
    step: float = 0.1,
    min_true: float = 0.3,
    repeats: int = 3,
) -> Tuning:
    """The candidate weights whose text leaves the fewest dev words unseen (first on ties).

    ``dev`` defaults to the dev split, ``vocab`` to wordfreq's list, ``written`` (the fixed
    training sentences that cover words whatever the weights) to the hand-written sentences.
    """
    dev = dev_sentences() if dev is None else tuple(dev)
    vocab = vocabulary() if vocab is None else vocab
    written_words = {
        w
        for s in (everyday_sentences() if written is None else written)
        for w in normalize_text(s).split()
    }

    def score(weights: Weights) -> float:
        rates = [
            oov_rate(written_words | _draw(vocab, weights, budget_words, s), dev)
            for s in range(repeats)
        ]
        return round(sum(rates) / len(rates), 5)

    table = tuple((w, score(w)) for w in candidate_weights(step, min_true))
    best = min(table, key=lambda row: row[1])
    return Tuning(weights=best[0], oov=best[1], table=table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubescribe_modeling.data.tuning")
    parser.add_argument("--budget-words", type=int, default=130_000)
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--min-true", type=float, default=0.3)
    args = parser.parse_args(argv)
    result = tune_draw_weights(
        budget_words=args.budget_words, step=args.step, min_true=args.min_true
    )
    print("| true | core | flat | dev OOV |\n|---|---|---|---|")
    for (t, c, f), oov in result.table:
        print(f"| {t:.2f} | {c:.2f} | {f:.2f} | {100 * oov:.2f} % |")
    print(f"chosen: {result.weights} (dev OOV {100 * result.oov:.2f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
