"""CTC greedy decoding with word timestamps, and segments built from words. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.artifact import WORD_BOUNDARY

# A pause at least this long between two words starts a new segment; so does a long segment.
SEGMENT_PAUSE_S = 0.8
SEGMENT_MAX_S = 12.0
# Silence at least this long between two emitted tokens ends a word even without a ``▁``: models
# trained on single utterances never learnt to emit a boundary across the pause between two
# sentences, which long audio (several sentences in one window) is full of.
WORD_PAUSE_S = 0.3


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    logprob: float = 0.0  # sum of the emitted tokens' log-probabilities
    tokens: int = 1  # how many tokens were emitted for it
    channel: int | None = None  # the audio channel, when channels are transcribed apart

    def shifted(self, offset: float) -> Word:
        return replace(self, start=self.start + offset, end=self.end + offset)

    @property
    def center(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float  # mean log-probability of the segment's tokens (Whisper's sense)
    # The CTC probability that nothing was said over the segment (see vad.no_speech_prob).
    no_speech_prob: float = 0.0
    channel: int | None = None  # the audio channel, when channels are transcribed apart


@dataclass(frozen=True)
class _Emission:
    token: int
    first: int  # first frame of the run
    last: int  # last frame of the run
    logprob: float


def _emissions(logprobs: npt.NDArray[np.float32], blank: int) -> list[_Emission]:
    if logprobs.shape[0] == 0:
        return []
    best = logprobs.argmax(axis=-1)
    scores = np.take_along_axis(logprobs, best[:, None], axis=-1)[:, 0]
    change = np.flatnonzero(np.diff(best, prepend=-1) != 0)
    ends = np.append(change[1:], len(best)) - 1
    return [
        _Emission(int(best[s]), int(s), int(e), float(scores[s : e + 1].max()))
        for s, e in zip(change, ends, strict=True)
        if best[s] != blank
    ]


def _is_special(symbol: str) -> bool:
    return len(symbol) > 2 and symbol.startswith("<") and symbol.endswith(">")


def greedy_words(
    logprobs: npt.NDArray[np.float32],
    tokens: Sequence[str],
    frame_seconds: float,
    pause_s: float = WORD_PAUSE_S,
) -> list[Word]:
    """Best path → collapse repeats → drop blanks → words at ``▁`` boundaries and at pauses.

    ``logprobs`` is ``[T, V+1]`` for the valid frames, the blank last. A word starts at the first
    frame of its first token and ends after the last frame of its last token.
    """
    blank = len(tokens) - 1
    words: list[Word] = []
    pieces: list[str] = []
    start = end = 0
    score = 0.0
    count = 0

    def flush() -> None:
        text = "".join(pieces)
        if text:
            words.append(
                Word(text, start * frame_seconds, (end + 1) * frame_seconds, score, max(count, 1))
            )

    for emission in _emissions(logprobs, blank):
        symbol = tokens[emission.token]
        if _is_special(symbol):
            continue
        if pieces and (emission.first - end - 1) * frame_seconds >= pause_s:
            flush()
            pieces = []
            score = 0.0
            count = 0
        if symbol.startswith(WORD_BOUNDARY) or not pieces:
            if symbol.startswith(WORD_BOUNDARY):
                flush()
                pieces = []
                score = 0.0
                count = 0
            symbol = symbol.lstrip(WORD_BOUNDARY)
            if not symbol:
                continue
            if not pieces:
                start = emission.first
        pieces.append(symbol)
        end = emission.last
        score += emission.logprob
        count += 1
    flush()
    return words


def text_of(words: Sequence[Word]) -> str:
    return " ".join(w.word for w in words)


def segments_of(
    words: Sequence[Word], pause_s: float = SEGMENT_PAUSE_S, max_s: float = SEGMENT_MAX_S
) -> list[Segment]:
    """Group words into caption-sized segments at pauses and before ``max_s``."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word.start - current[-1].end >= pause_s
            or word.end - current[0].start > max_s
        ):
            groups.append([word])
        else:
            current.append(word)
    return [
        Segment(
            id=i,
            start=group[0].start,
            end=group[-1].end,
            text=text_of(group),
            avg_logprob=sum(w.logprob for w in group) / sum(w.tokens for w in group),
        )
        for i, group in enumerate(groups)
    ]
