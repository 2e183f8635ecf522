"""The pipeline: decode → resample → window → VAD → features → batch → ONNX → CTC → stitch.

One object per concern does the work; this one only chains them for a request, keeping at most
``max_pending`` windows of one request in the batcher at a time (bounded memory).
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from typing import IO

import numpy as np
import numpy.typing as npt

from kubescribe.errors import KubescribeError
from kubescribe_runtime import audio
from kubescribe_runtime.batcher import DynamicBatcher, Flow
from kubescribe_runtime.ctc import Segment, Word, segments_of, text_of
from kubescribe_runtime.decoding import BlankTrack, Logprobs, WindowDecoder, WindowJob
from kubescribe_runtime.model import AcousticModel, ModelInput, prepare
from kubescribe_runtime.scheduling import Priority
from kubescribe_runtime.vad import crop_to_speech
from kubescribe_runtime.windowing import Stitcher

# How often a waiting request checks whether its client is still there.
POLL_S = 0.1


class RequestTimeout(KubescribeError):
    """No window of the request was decoded within the configured timeout."""


class ClientGone(KubescribeError):
    """The client hung up: the request stops costing compute."""


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
    blanks: list[BlankTrack] = field(default_factory=list)


def with_no_speech_probs(segments: list[Segment], blanks: list[BlankTrack]) -> list[Segment]:
    """Each segment's ``no_speech_prob`` from the window that saw it whole (else its centre)."""
    result = []
    for segment in segments:
        centre = (segment.start + segment.end) / 2
        track = next((b for b in blanks if b.covers(segment.start, segment.end)), None)
        track = track or next((b for b in blanks if b.covers(centre, centre)), None)
        if track is not None:
            prob = track.no_speech_prob(segment.start, segment.end)
            segment = replace(segment, no_speech_prob=prob)
        result.append(segment)
    return result


@dataclass(frozen=True)
class PipelineSettings:
    window_seconds: float = 20.0
    window_overlap_seconds: float = 2.0
    max_audio_seconds: float = 7200.0
    max_audio_seconds_per_mb: float = 0.0  # 0: no bound per uploaded megabyte
    request_timeout_s: float = 120.0
    # Voice activity detection: windows without speech are not decoded, long non-speech at a
    # window's edges is cut, and long gaps inside are left out of the feature statistics.
    vad: bool = True


class Transcriber:
    def __init__(
        self,
        model: AcousticModel,
        batcher: DynamicBatcher[ModelInput, npt.NDArray[np.float32]],
        settings: PipelineSettings,
        on_window: Callable[[], None] | None = None,
        on_decoded: Callable[[float], None] | None = None,
        on_skipped: Callable[[], None] | None = None,
        on_cancelled: Callable[[str, int], None] | None = None,
    ) -> None:
        self.model = model
        self.batcher = batcher
        self.settings = settings
        self.manifest = model.manifest
        self.max_pending = max(2, batcher.max_batch_size)
        self._on_window = on_window or (lambda: None)
        # The one window → crop → batch → stitch path (Realtime turns take the same).
        self.decoder = WindowDecoder(
            model,
            settings.window_seconds,
            settings.window_overlap_seconds,
            settings.vad,
            on_decoded,
            on_skipped,
        )
        # Queued windows dropped unseen, by reason (disconnected, timeout, error).
        self._on_cancelled = on_cancelled or (lambda reason, count: None)

    def warm_up(self) -> None:
        """One inference on a second of quiet noise, outside the batcher (and one pass of the
        VAD, which loads its model)."""
        rng = np.random.default_rng(0)
        samples = (1e-3 * rng.standard_normal(self.manifest.sample_rate)).astype(np.float32)
        self.model.infer([prepare(samples, self.manifest)])
        if self.settings.vad:
            crop_to_speech(samples, self.manifest.sample_rate)

    def transcribe(
        self,
        data: bytes | IO[bytes],
        timeout_s: float | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Transcript:
        return self.assemble(self.stream(data, timeout_s, cancelled))

    def assemble(self, stream: Iterable[Progress]) -> Transcript:
        """The transcript of a whole :meth:`stream`."""
        words: list[Word] = []
        blanks: list[BlankTrack] = []
        duration_s = 0.0
        for progress in stream:
            words += progress.words
            blanks += progress.blanks
            duration_s = progress.audio_s
        return Transcript(
            text=text_of(words),
            words=words,
            segments=with_no_speech_probs(segments_of(words), blanks),
            duration_s=duration_s,
            language=self.manifest.languages[0],
        )

    def stream(
        self,
        data: bytes | IO[bytes],
        timeout_s: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        priority: Priority = Priority.FILE,
        channel: int | None = None,
    ) -> Generator[Progress, None, None]:
        """The transcript as it becomes final, window by window, in audio order.

        Results are collected as soon as the oldest pending window is decoded, so the first
        words come after the first window, not at the end. The request's windows are one flow
        of the batcher, in the class ``priority`` (a short request's goes before files').

        Timeout: the request fails (:class:`RequestTimeout`) when ``timeout_s`` passes without
        one of its windows decoded — a bound on waiting, not on the length of the audio.
        Cancellation: ``cancelled()`` is polled while waiting (every :data:`POLL_S`) and before
        each window; once true (or when the generator is closed early), the queued windows are
        dropped and no new ones are made (:class:`ClientGone`). ``channel``: that channel of
        the audio alone, instead of the mix of all.
        """
        rate = self.manifest.sample_rate
        limit = self.settings.request_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        gone = cancelled or (lambda: False)
        flow = self.batcher.open_flow(priority)
        blocks = audio.iter_mono(
            data,
            rate,
            self.settings.max_audio_seconds,
            self.settings.max_audio_seconds_per_mb,
            channel=channel,
        )
        pending: deque[WindowJob] = deque()
        stitcher = Stitcher()
        total_samples = 0

        def collect_oldest() -> Progress:
            nonlocal deadline
            oldest = pending.popleft()
            while True:
                remaining = deadline - time.monotonic()
                try:
                    logprobs = oldest.future.result(timeout=min(max(remaining, 0.0), POLL_S))
                    break
                except concurrent.futures.TimeoutError as exc:
                    if gone():
                        oldest.future.cancel()
                        raise ClientGone("the client closed the connection") from exc
                    if remaining <= POLL_S:
                        oldest.future.cancel()
                        raise RequestTimeout(
                            f"no part of the audio was transcribed within {limit:g} s"
                        ) from exc
            deadline = time.monotonic() + limit  # progress: the timeout starts again
            part, track = self.decoder.read(oldest, logprobs)
            return Progress(stitcher.add(part, oldest.seam_s), oldest.end_s, [track])

        reason = "error"
        try:
            upcoming = self.decoder.windows(blocks)
            while True:
                if gone():
                    raise ClientGone("the client closed the connection")
                # Counted as producing only while decoding and preparing a window, not while
                # waiting for results: the batcher waits for producers, never for waiters.
                with self.batcher.producing(priority):
                    win = next(upcoming, None)
                    if win is None:
                        break
                    total_samples = max(total_samples, win.end)
                    timeout = max(0.0, deadline - time.monotonic())
                    enqueue = functools.partial(_enqueue, flow, timeout_s=timeout, gone=gone)
                    pending.append(self.decoder.submit(win, enqueue))
                self._on_window()
                while pending and (
                    len(pending) >= min(self.max_pending, self.batcher.lookahead())
                    or pending[0].future.done()
                ):
                    yield collect_oldest()
            while pending:
                yield collect_oldest()
            # The last window's tail: no next window covers it.
            yield Progress(stitcher.finish(), total_samples / rate)
            reason = ""
        except (ClientGone, GeneratorExit):
            reason = "disconnected"
            raise
        except RequestTimeout:
            reason = "timeout"
            raise
        except TimeoutError as exc:  # no room in the batcher's queue in time
            reason = "timeout"
            raise RequestTimeout(
                f"no part of the audio was transcribed within {limit:g} s"
            ) from exc
        finally:
            dropped = flow.cancel()  # the queued windows; a running batch finishes
            if dropped and reason:
                self._on_cancelled(reason, dropped)


def _enqueue(
    flow: Flow[ModelInput, Logprobs],
    item: ModelInput,
    timeout_s: float,
    gone: Callable[[], bool],
) -> concurrent.futures.Future[Logprobs]:
    """``flow.submit``, which may wait for room in the queue: a client that hangs up meanwhile
    is noticed within :data:`POLL_S` (:class:`ClientGone`), not at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return flow.submit(item, item.length, max(0.0, min(remaining, POLL_S)))
        except TimeoutError:
            if gone():
                raise ClientGone("the client closed the connection") from None
            if remaining <= POLL_S:
                raise
