"""The pipeline: decode → resample → window → features → batch → ONNX → CTC → stitch.

One object per concern does the work; this one only chains them for a request, keeping at most
``max_pending`` windows of one request in the batcher at a time (bounded memory).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe.errors import KubescribeError
from kubescribe_runtime import audio
from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.ctc import Segment, Word, greedy_words, segments_of, text_of
from kubescribe_runtime.model import AcousticModel, ModelInput, prepare
from kubescribe_runtime.windowing import Stitcher, WindowWords, seam, windows


class RequestTimeout(KubescribeError):
    """The request was not answered within the configured timeout."""


@dataclass(frozen=True)
class Transcript:
    text: str
    words: list[Word]
    segments: list[Segment]
    duration_s: float
    language: str


@dataclass(frozen=True)
class Progress:
    """Words that became final (absolute times, audio order) and the audio they cover."""

    words: list[Word]
    audio_s: float


@dataclass(frozen=True)
class _Pending:
    start_s: float
    end_s: float
    seam_s: float
    future: concurrent.futures.Future[npt.NDArray[np.float32]]


@dataclass(frozen=True)
class PipelineSettings:
    window_seconds: float = 20.0
    window_overlap_seconds: float = 2.0
    max_audio_seconds: float = 7200.0
    request_timeout_s: float = 120.0


class Transcriber:
    def __init__(
        self,
        model: AcousticModel,
        batcher: DynamicBatcher[ModelInput, npt.NDArray[np.float32]],
        settings: PipelineSettings,
        on_window: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.batcher = batcher
        self.settings = settings
        self.manifest = model.manifest
        self.max_pending = max(2, batcher.max_batch_size)
        self._on_window = on_window or (lambda: None)

    def warm_up(self) -> None:
        """One inference on a second of quiet noise, outside the batcher."""
        rng = np.random.default_rng(0)
        samples = (1e-3 * rng.standard_normal(self.manifest.sample_rate)).astype(np.float32)
        self.model.infer([prepare(samples, self.manifest)])

    def transcribe(self, data: bytes, timeout_s: float | None = None) -> Transcript:
        words: list[Word] = []
        duration_s = 0.0
        for progress in self.stream(data, timeout_s):
            words += progress.words
            duration_s = progress.audio_s
        return Transcript(
            text=text_of(words),
            words=words,
            segments=segments_of(words),
            duration_s=duration_s,
            language=self.manifest.languages[0],
        )

    def stream(
        self, data: bytes, timeout_s: float | None = None
    ) -> Generator[Progress, None, None]:
        """The transcript as it becomes final, window by window, in audio order.

        Results are collected as soon as the oldest pending window is decoded, so the first
        words come after the first window, not at the end. Closing the generator early (a
        client that hung up) cancels the windows still queued.
        """
        rate = self.manifest.sample_rate
        limit = self.settings.request_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        blocks = audio.iter_mono(data, rate, self.settings.max_audio_seconds)
        window = int(self.settings.window_seconds * rate)
        overlap = int(self.settings.window_overlap_seconds * rate)
        pending: deque[_Pending] = deque()
        stitcher = Stitcher()
        total_samples = 0

        def collect_oldest() -> Progress:
            oldest = pending.popleft()
            remaining = deadline - time.monotonic()
            try:
                logprobs = oldest.future.result(timeout=max(remaining, 0.0))
            except concurrent.futures.TimeoutError as exc:
                oldest.future.cancel()
                raise RequestTimeout(f"the request took longer than {limit:g} s") from exc
            words = greedy_words(logprobs, self.model.artifact.tokens, self.model.frame_seconds)
            part = WindowWords(oldest.start_s, oldest.end_s, words)
            return Progress(stitcher.add(part, oldest.seam_s), oldest.end_s)

        try:
            upcoming = windows(blocks, window, overlap)
            while True:
                # Counted as producing only while decoding and preparing a window, not while
                # waiting for results: the batcher waits for producers, never for waiters.
                with self.batcher.producing():
                    win = next(upcoming, None)
                    if win is None:
                        break
                    total_samples = max(total_samples, win.end)
                    item = prepare(win.samples, self.manifest)
                    future = self.batcher.submit(item, item.length)
                self._on_window()
                next_start_s = (win.start + window - overlap) / rate
                pending.append(
                    _Pending(
                        win.start / rate, win.end / rate, seam(win.end / rate, next_start_s), future
                    )
                )
                while pending and (len(pending) >= self.max_pending or pending[0].future.done()):
                    yield collect_oldest()
            while pending:
                yield collect_oldest()
            # The last window's tail: no next window covers it.
            yield Progress(stitcher.finish(), total_samples / rate)
        finally:
            for waiting in pending:
                waiting.future.cancel()
