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


class Stitcher:
    """Stitch windows as their words arrive, in order, each word exactly once.

    A window's words up to its seam (the middle of its overlap with the next window) are final
    as soon as the window is decoded; those beyond it are held until the next window arrives
    (which covers them from the seam on) or the stream ends (no next window: they are kept).
    Fed every window, it gives exactly :func:`stitch`'s words.
    """

    def __init__(self) -> None:
        self._low = -np.inf
        self._held: list[Word] = []

    def add(self, part: WindowWords, seam_s: float) -> list[Word]:
        """The newly final words (absolute times) of ``part``, whose seam is ``seam_s``."""
        final: list[Word] = []
        self._held = []
        for word in part.words:
            absolute = word.shifted(part.start_s)
            if absolute.center < self._low:
                continue
            (final if absolute.center < seam_s else self._held).append(absolute)
        self._low = seam_s
        return final

    def finish(self) -> list[Word]:
        """The last window's words beyond its seam."""
        held, self._held = self._held, []
        return held


def seam(end_s: float, next_start_s: float) -> float:
    """Where a window hands over to the next: the middle of their overlap."""
    return (next_start_s + end_s) / 2


def stitch(parts: Sequence[WindowWords]) -> list[Word]:
    """Absolute-time words of consecutive overlapping windows, each word exactly once."""
    stitcher = Stitcher()
    result: list[Word] = []
    for i, part in enumerate(parts):
        last = i + 1 == len(parts)
        cut = np.inf if last else seam(part.end_s, parts[i + 1].start_s)
        result += stitcher.add(part, cut)
    return result + stitcher.finish()
