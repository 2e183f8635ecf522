"""The one window → VAD crop → features → batch → CTC → stitch path, shared by files, SSE
(:class:`~kubescribe_runtime.transcriber.Transcriber`) and Realtime turns
(:class:`~kubescribe_runtime.realtime.decode.SessionDecoder`): the same audio gives the same
words whichever surface it came through.

:class:`WindowDecoder` queues one window for the model (only its speech, when the VAD is on) and
turns the model's log-probabilities back into words in stream time; the callers own the
waiting (timeouts, cancellation) and feed the results, in window order, to a
:class:`~kubescribe_runtime.windowing.Stitcher`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.ctc import Word, greedy_words
from kubescribe_runtime.model import AcousticModel, ModelInput, prepare
from kubescribe_runtime.vad import SpeechCrop, crop_to_speech, no_speech_prob
from kubescribe_runtime.windowing import Stitcher, Window, WindowWords, seam, windows

Logprobs = npt.NDArray[np.float32]
Samples = npt.NDArray[np.float32]
Enqueue = Callable[[ModelInput], "concurrent.futures.Future[Logprobs]"]


@dataclass(frozen=True)
class BlankTrack:
    """The blank log-probabilities of one decoded window, for ``no_speech_prob``."""

    start_s: float  # absolute time of the first output frame
    frame_s: float
    blank: npt.NDArray[np.float32]  # [T', 1] log-probabilities of the blank

    def covers(self, start_s: float, end_s: float) -> bool:
        return self.start_s <= start_s and end_s <= self.start_s + len(self.blank) * self.frame_s

    def no_speech_prob(self, start_s: float, end_s: float) -> float:
        span = (start_s - self.start_s, end_s - self.start_s)
        return no_speech_prob(self.blank, self.frame_s, span, blank=0)


@dataclass(frozen=True)
class WindowJob:
    """A window queued for the model (seconds in the stream's time)."""

    start_s: float
    end_s: float
    seam_s: float  # where the next window takes over
    future: concurrent.futures.Future[Logprobs]
    offset_s: float = 0.0  # where the decoded part starts in the window (non-speech cut)


def _no_frames(vocabulary: int) -> concurrent.futures.Future[Logprobs]:
    """The result of a window with no speech: decoded as nothing, without the model."""
    future: concurrent.futures.Future[Logprobs] = concurrent.futures.Future()
    future.set_result(np.zeros((0, vocabulary), dtype=np.float32))
    return future


class WindowDecoder:
    """Windows a stream, queues each window's speech for the model, reads words back."""

    def __init__(
        self,
        model: AcousticModel,
        window_seconds: float,
        overlap_seconds: float,
        vad: bool = True,
        on_decoded: Callable[[float], None] | None = None,
        on_skipped: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.rate = model.manifest.sample_rate
        self.window = int(window_seconds * self.rate)
        self.overlap = int(overlap_seconds * self.rate)
        self.vad = vad
        # The detector's crop (a benchmark puts another detector here to compare).
        self.crop: Callable[[Samples, int], SpeechCrop | None] = crop_to_speech
        # Seconds of audio given to the model; a window skipped as non-speech.
        self._on_decoded = on_decoded or (lambda seconds: None)
        self._on_skipped = on_skipped or (lambda: None)

    def windows(self, blocks: Iterable[Samples]) -> Iterator[Window]:
        return windows(blocks, self.window, self.overlap)

    def submit(self, win: Window, enqueue: Enqueue, vad: bool | None = None) -> WindowJob:
        """Queue ``win``'s speech (all of it without the VAD) through ``enqueue``."""
        rate = self.rate
        start_s, end_s = win.start / rate, win.end / rate
        cut = seam(end_s, (win.start + self.window - self.overlap) / rate)
        samples = win.samples
        if not (self.vad if vad is None else vad):
            item = prepare(samples, self.model.manifest)
            self._on_decoded(len(samples) / rate)
            return WindowJob(start_s, end_s, cut, enqueue(item))
        crop = self.crop(samples, rate)
        if crop is None:
            self._on_skipped()
            return WindowJob(start_s, end_s, cut, _no_frames(len(self.model.artifact.tokens)))
        speech = samples[crop.start : crop.end]
        item = prepare(speech, self.model.manifest, crop.regions if crop.gaps else None)
        self._on_decoded(len(speech) / rate)
        return WindowJob(start_s, end_s, cut, enqueue(item), crop.start / rate)

    def read(self, job: WindowJob, logprobs: Logprobs) -> tuple[WindowWords, BlankTrack]:
        """The words of a decoded window (relative to its start) and its blank track."""
        frame_s = self.model.frame_seconds
        words = greedy_words(logprobs, self.model.artifact.tokens, frame_s)
        if job.offset_s:
            words = [w.shifted(job.offset_s) for w in words]
        track = BlankTrack(job.start_s + job.offset_s, frame_s, logprobs[:, -1:].copy())
        return WindowWords(job.start_s, job.end_s, words), track

    def stitch(self, jobs: Sequence[WindowJob]) -> list[Word]:
        """The words of finished jobs (all of one stream, in order), stitched exactly as a
        file's; raises what a batch raised."""
        stitcher = Stitcher()
        words: list[Word] = []
        for job in jobs:
            part, _ = self.read(job, job.future.result())
            words += stitcher.add(part, job.seam_s)
        return words + stitcher.finish()
