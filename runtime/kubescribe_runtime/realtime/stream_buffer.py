"""A session's audio not yet committed (nor dropped), addressed in *stream samples*: samples
counted since the session began, so that a turn's positions hold whatever is cut off the
front. Pure.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]


class StreamBuffer:
    def __init__(self) -> None:
        self._samples: Samples = np.zeros(0, dtype=np.float32)
        self.start = 0  # stream sample of the first one held

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def end(self) -> int:
        """The stream sample after the last one received."""
        return self.start + len(self._samples)

    def append(self, samples: Samples) -> None:
        if len(samples):
            self._samples = np.concatenate([self._samples, samples])

    def since(self, start: int) -> Samples:
        """A copy from stream sample ``start`` to the end."""
        return self._samples[start - self.start :].copy()

    def take(self, start: int, end: int) -> Samples:
        """A copy of ``[start, end)``; everything before ``end`` goes."""
        samples = self._samples[start - self.start : end - self.start].copy()
        self.drop_until(end)
        return samples

    def drop_until(self, end: int) -> None:
        self._samples = self._samples[end - self.start :]
        self.start = end

    def keep_last(self, count: int) -> None:
        if len(self._samples) > count:
            self.drop_until(self.end - count)

    def clear(self) -> None:
        self.drop_until(self.end)
