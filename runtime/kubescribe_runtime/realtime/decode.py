"""A session's decode requests, run by the server's one model through its one dynamic batcher.

Each session opens one *live* flow on the batcher: its windows go before every file window, and
hanging up cancels what it still has queued. A final decode is windowed exactly as a file is
(same window length, overlap and stitching), so a turn's transcript equals the offline
transcript of the same audio; a partial is one window (the turn's last few seconds).
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.ctc import Word, greedy_words
from kubescribe_runtime.model import AcousticModel, ModelInput, prepare
from kubescribe_runtime.realtime.session import DecodeRequest
from kubescribe_runtime.windowing import WindowWords, stitch, windows

Logprobs = npt.NDArray[np.float32]


@dataclass
class PendingDecode:
    request: DecodeRequest
    parts: list[tuple[float, float, concurrent.futures.Future[Logprobs]]]

    def done(self) -> bool:
        return all(future.done() for _, _, future in self.parts)

    def cancel(self) -> None:
        for _, _, future in self.parts:
            future.cancel()


class SessionDecoder:
    """Submits a session's decode requests on its live flow and turns results into words."""

    def __init__(
        self,
        model: AcousticModel,
        batcher: DynamicBatcher[ModelInput, Logprobs],
        window_seconds: float,
        overlap_seconds: float,
    ) -> None:
        self.model = model
        self.rate = model.manifest.sample_rate
        self._window = int(window_seconds * self.rate)
        self._overlap = int(overlap_seconds * self.rate)
        self._batcher = batcher
        # The session's live flow (priority over file windows); a batcher without flows takes
        # plain submits.
        open_flow = getattr(batcher, "open_flow", None)
        self._flow: Any = open_flow(live=True) if open_flow is not None else None

    def submit(self, request: DecodeRequest) -> PendingDecode:
        parts = []
        for window in windows([request.samples], self._window, self._overlap):
            item = prepare(window.samples, self.model.manifest)
            future = (self._flow or self._batcher).submit(item, item.length)
            parts.append((window.start / self.rate, window.end / self.rate, future))
        return PendingDecode(request, parts)

    def words(self, pending: PendingDecode) -> list[Word]:
        """The stitched words of a finished decode (times relative to the request's samples);
        raises what the batch raised."""
        tokens = self.model.artifact.tokens
        parts = [
            WindowWords(start, end, greedy_words(future.result(), tokens, self.model.frame_seconds))
            for start, end, future in pending.parts
        ]
        return stitch(parts)

    def close(self) -> None:
        if self._flow is not None:
            self._flow.cancel()
