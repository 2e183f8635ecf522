"""Long audio: cut a stream of samples into overlapping windows, and stitch the windows' words.

Windows of ``window`` samples start every ``window - overlap`` samples. Only about one window
of audio is held at a time, so memory is bounded whatever the length. At each seam, the words of
the earlier window are kept up to the middle of the overlap and those of the later window from
there on (by word centre): a word inside the overlap is seen whole by both windows and kept
exactly once, and a word cut by a window's edge lies far from the middle and is taken from the
window that saw it whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.ctc import Word


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first sample, in the whole stream
    samples: npt.NDArray[np.float32]

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def windows(
    blocks: Iterable[npt.NDArray[np.float32]], window: int, overlap: int
) -> Iterator[Window]:
    """Overlapping windows over a stream of sample blocks."""
    if not 0 <= 2 * overlap < window:
        raise ValueError("overlap must be less than half the window")
    step = window - overlap
    buffer = np.zeros(0, dtype=np.float32)
    start = 0
    index = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if len(buffer) else np.asarray(block)
        while len(buffer) >= window:
            yield Window(index, start, buffer[:window].copy())
            index += 1
            start += step
            buffer = buffer[step:]
    # The tail: new audio beyond what the previous window covered (or the only window).
    if (index == 0 or len(buffer) > overlap) and len(buffer):
        yield Window(index, start, buffer.copy())


@dataclass(frozen=True)
class WindowWords:
    start_s: float
    end_s: float
    words: Sequence[Word]  # times relative to the window's start


def stitch(parts: Sequence[WindowWords]) -> list[Word]:
    """Absolute-time words of consecutive overlapping windows, each word exactly once."""
    result: list[Word] = []
    for i, part in enumerate(parts):
        low = -np.inf if i == 0 else (part.start_s + parts[i - 1].end_s) / 2
        high = np.inf if i + 1 == len(parts) else (parts[i + 1].start_s + part.end_s) / 2
        for word in part.words:
            absolute = word.shifted(part.start_s)
            if low <= absolute.center < high:
                result.append(absolute)
    return result
