"""A session's decode requests, run by the server's one model through its one dynamic batcher.

Each session opens one *live* flow on the batcher: its windows go before every file window, and
hanging up cancels what it still has queued. A final decode takes the file path itself
(:class:`~kubescribe_runtime.decoding.WindowDecoder`: same windows, VAD crop and stitching), so a
committed turn's transcript equals the file transcript of the same audio; a partial is one
window (the turn's last few seconds), decoded whole: the turn detector already judged its speech,
and running the VAD again every partial would cost more than the partial's own features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.decoding import Logprobs, WindowDecoder, WindowJob
from kubescribe_runtime.model import AcousticModel, ModelInput
from kubescribe_runtime.realtime.session import DecodeRequest
from kubescribe_runtime.scheduling import Priority

__all__ = ["Logprobs", "PendingDecode", "SessionDecoder"]


@dataclass
class PendingDecode:
    request: DecodeRequest
    parts: list[WindowJob]

    def done(self) -> bool:
        return all(job.future.done() for job in self.parts)

    def cancel(self) -> None:
        for job in self.parts:
            job.future.cancel()


class SessionDecoder:
    """Submits a session's decode requests on its live flow and turns results into words."""

    def __init__(
        self,
        model: AcousticModel,
        batcher: DynamicBatcher[ModelInput, Logprobs],
        window_seconds: float,
        overlap_seconds: float,
        vad: bool = True,
    ) -> None:
        self.model = model
        self.rate = model.manifest.sample_rate
        self._decoder = WindowDecoder(model, window_seconds, overlap_seconds, vad)
        self._batcher = batcher
        # The session's live flow (priority over file windows); a batcher without flows takes
        # plain submits.
        open_flow = getattr(batcher, "open_flow", None)
        self._flow: Any = open_flow(Priority.LIVE) if open_flow is not None else None

    def _enqueue(self, item: ModelInput) -> Any:
        return (self._flow or self._batcher).submit(item, item.length)

    def submit(self, request: DecodeRequest) -> PendingDecode:
        vad = None if request.kind == "final" else False  # a final: as a file is
        parts = [
            self._decoder.submit(window, self._enqueue, vad)
            for window in self._decoder.windows([request.samples])
        ]
        return PendingDecode(request, parts)

    def words(self, pending: PendingDecode) -> list[Word]:
        """The stitched words of a finished decode (times relative to the request's samples);
        raises what the batch raised."""
        return self._decoder.stitch(pending.parts)

    def close(self) -> None:
        if self._flow is not None:
            self._flow.cancel()
