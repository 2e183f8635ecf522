"""Partials that never take a word back. Pure.

While a turn is open, its latest audio is decoded every few hundred milliseconds on a bounded
window; each decode is a *hypothesis*: words with absolute times. Words near the window's right
edge are unreliable (a word being spoken is cut, a CTC spike is still to come), so a word is
emitted only once it is *stable*:

- it ended at least ``edge_margin_s`` before the window's right edge (it has right context), or
- the previous hypothesis had the same word at about the same start (within ``match_s``), and it
  ended at least ``guard_s`` before the edge (it is not being cut right now).

Words are emitted in order and only after everything already emitted (by time), and the first
unstable word stops the emission: deltas only ever append. When the turn ends, its final
transcript comes from one decode of the whole turn; :meth:`StablePartials.remainder` gives the
final words after those already emitted, so the deltas end where the transcript ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubescribe_runtime.ctc import Word


@dataclass(frozen=True)
class PartialPolicy:
    edge_margin_s: float = 1.0
    guard_s: float = 0.25
    match_s: float = 0.12


class StablePartials:
    def __init__(self, policy: PartialPolicy | None = None) -> None:
        self.policy = policy or PartialPolicy()
        self.emitted: list[Word] = []
        self._previous: list[Word] = []

    @property
    def emitted_until_s(self) -> float:
        return self.emitted[-1].end if self.emitted else float("-inf")

    def _after_emitted(self, words: Sequence[Word]) -> list[Word]:
        until = self.emitted_until_s
        return [w for w in words if w.center > until]

    def _seen_before(self, word: Word) -> bool:
        return any(
            p.word == word.word and abs(p.start - word.start) <= self.policy.match_s
            for p in self._previous
        )

    def update(self, hypothesis: Sequence[Word], window_end_s: float) -> list[Word]:
        """The words of ``hypothesis`` (absolute times) that became stable, in order."""
        policy = self.policy
        stable: list[Word] = []
        for word in self._after_emitted(hypothesis):
            far = word.end <= window_end_s - policy.edge_margin_s
            repeated = self._seen_before(word) and word.end <= window_end_s - policy.guard_s
            if not (far or repeated):
                break
            stable.append(word)
        self._previous = list(hypothesis)
        self.emitted += stable
        return stable

    def remainder(self, final: Sequence[Word]) -> list[Word]:
        """The final transcript's words after those already emitted."""
        rest = self._after_emitted(final)
        self.emitted += rest
        return rest


def delta_text(words: Sequence[Word], first: bool) -> str:
    """The delta for newly emitted words: space-separated, with a leading space unless they
    are the first words of the turn."""
    text = " ".join(w.word for w in words)
    return text if first or not text else " " + text
