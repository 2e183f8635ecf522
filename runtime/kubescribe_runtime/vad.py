"""Voice activity detection: Silero VAD's speech probabilities (:mod:`.silero`, an ONNX model
shipped in the package) turned into speech regions, confirmed afterwards by the acoustic model's
own CTC blank posteriors (the way Riva and sherpa-onnx decide an endpoint). Pure functions and
one small state machine over the probabilities; the model run is :mod:`.silero`'s.

Detector stage (before decoding; about 0.2 ms of one core per 32 ms of audio):

- :class:`SpeechDetector` — hysteresis over Silero's per-chunk probabilities (32 ms chunks): speech
  starts at a chunk at or above ``threshold`` that the next ``start_s`` keep above
  ``threshold - 0.15`` (Silero's own ``neg_threshold`` and ``min_speech_duration_ms``) and stops
  after ``hangover_s`` of chunks below it. It can be fed chunk by
  chunk (a live session) and reports :class:`SpeechEvent` s in stream time; ``flush()`` closes an
  open region;
- :func:`speech_regions` — the offline form: every region of a waveform, widened by ``pad_s``
  on both sides (so that word onsets and trailing consonants stay in) and merged when close;
- :func:`crop_to_speech` — what the pipeline decodes of a window: nothing when it holds no
  speech, else the window without long leading/trailing non-speech, and whether long gaps
  inside call for normalisation statistics over the speech frames only.

Model stage (after decoding, free: the log-probabilities are already there):

- :func:`no_speech_prob` — the CTC probability that nothing was said over a span: the product
  of the blank posteriors of its frames (every path but the all-blank one emits a token).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.silero import SileroModel, SpeechProbs

Region = tuple[float, float]
# Silero's own hysteresis: speech goes on while the probability stays above threshold - 0.15.
NEG_OFFSET = 0.15
# A run forming speech survives this many chunks below it (Silero's min_silence_duration_ms,
# 100 ms): the dip between two syllables does not restart it.
MAX_DIP_CHUNKS = 3


@dataclass(frozen=True)
class VadSettings:
    """Thresholds over Silero's speech probability; the defaults are Silero's own, with a
    longer hangover and padding (a window is cropped, not cut into utterances)."""

    threshold: float = 0.5
    # Speech needed to start a region (Silero's min_speech_duration_ms), non-speech to end it.
    start_s: float = 0.25
    hangover_s: float = 0.3
    # Offline regions are widened by this much on both sides, and merged when closer than twice.
    pad_s: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must be between 0 and 1")
        if min(self.start_s, self.hangover_s, self.pad_s) < 0:
            raise ValueError("start_s, hangover_s and pad_s must be >= 0")


@dataclass(frozen=True)
class SpeechEvent:
    kind: str  # "started" or "stopped"
    time_s: float  # stream time: where speech started, or where it stopped (its last chunk end)


class SpeechDetector:
    """Streaming Silero VAD with hysteresis.

    Feed mono samples in any chunk sizes with :meth:`feed`; samples that do not fill a chunk wait
    for the next feed. Events are in stream time (seconds since the first sample fed). A
    ``started`` event is dated to the first speech chunk of the run that started it, a
    ``stopped`` event to the end of the last speech chunk before the hangover.
    """

    def __init__(
        self,
        sample_rate: int,
        settings: VadSettings | None = None,
        model: SileroModel | None = None,
    ) -> None:
        self.settings = settings or VadSettings()
        self._probs = SpeechProbs(sample_rate, model)
        self._chunk_s = self._probs.chunk_s
        s = self.settings
        self._start_chunks = max(1, round(s.start_s / self._chunk_s))
        self._stop_chunks = max(1, round(s.hangover_s / self._chunk_s))
        self._chunks = 0  # chunks classified so far
        self._candidate: int | None = None  # first chunk of a run that may become speech
        self._dip = 0  # chunks of that run below the keep level, in a row
        self._last_speech = -1  # last speech chunk while in speech
        self.in_speech = False

    @property
    def time_s(self) -> float:
        """Stream time up to which chunks were classified."""
        return self._chunks * self._chunk_s

    def feed(self, samples: npt.NDArray[np.floating]) -> list[SpeechEvent]:
        """Classify the whole chunks now available; the events they caused, in order."""
        return self.classify(self._probs.feed(samples))

    def classify(self, probs: npt.NDArray[np.floating]) -> list[SpeechEvent]:
        """The events of the next chunks' speech probabilities."""
        events: list[SpeechEvent] = []
        for prob in probs:
            event = self._step(float(prob))
            if event is not None:
                events.append(event)
        return events

    def _step(self, prob: float) -> SpeechEvent | None:
        index = self._chunks
        self._chunks += 1
        high = self.settings.threshold
        low = high - NEG_OFFSET
        if not self.in_speech:
            # A run that reaches the threshold and stays above ``low`` for start_s is speech
            # (shorter: a click, a breath, the onset of a hum).
            if self._candidate is None:
                self._candidate = index if prob >= high else None
                self._dip = 0
            elif prob < low:
                self._dip += 1
                if self._dip > MAX_DIP_CHUNKS:  # more than a dip between two sounds
                    self._candidate = None
                return None
            else:
                self._dip = 0
            if self._candidate is None or index - self._candidate + 1 < self._start_chunks:
                return None
            self.in_speech = True
            self._last_speech = index
            start, self._candidate = self._candidate, None
            return SpeechEvent("started", start * self._chunk_s)
        if prob >= low:
            self._last_speech = index
        elif index - self._last_speech >= self._stop_chunks:
            self.in_speech = False
            return SpeechEvent("stopped", (self._last_speech + 1) * self._chunk_s)
        return None

    def flush(self) -> list[SpeechEvent]:
        """End of stream: the last partial chunk (zero-padded), then close an open region at
        its last speech chunk."""
        rest = self._probs.tail()
        events: list[SpeechEvent] = []
        if len(rest):
            pad = np.zeros(-len(rest) % self._probs.chunk, dtype=np.float32)
            events = self.classify(self._probs.feed(np.concatenate([rest, pad])))
        if not self.in_speech:
            return events
        self.in_speech = False
        return [*events, SpeechEvent("stopped", (self._last_speech + 1) * self._chunk_s)]


def regions_of(events: Sequence[SpeechEvent]) -> list[Region]:
    """Pair ``started``/``stopped`` events into (start_s, end_s) regions."""
    regions: list[Region] = []
    start: float | None = None
    for event in events:
        if event.kind == "started":
            start = event.time_s
        elif start is not None:
            regions.append((start, event.time_s))
            start = None
    return regions


def widen(regions: Sequence[Region], pad_s: float, duration_s: float) -> list[Region]:
    """Each region widened by ``pad_s`` (within ``[0, duration_s]``), overlapping ones merged."""
    merged: list[Region] = []
    for start, end in regions:
        low, high = max(0.0, start - pad_s), min(duration_s, end + pad_s)
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def speech_regions(
    samples: npt.NDArray[np.floating], sample_rate: int, settings: VadSettings | None = None
) -> list[Region]:
    """Offline: the speech regions of a whole waveform, padded and merged, in seconds."""
    settings = settings or VadSettings()
    detector = SpeechDetector(sample_rate, settings)
    events = detector.feed(samples)
    events += detector.flush()
    duration = len(samples) / sample_rate
    return widen(regions_of(events), settings.pad_s, duration)


@dataclass(frozen=True)
class SpeechCrop:
    """What of a window to decode: samples ``start:end``, and the speech in them."""

    start: int
    end: int
    regions: tuple[Region, ...]  # padded speech regions, seconds from ``start``
    gaps: bool  # non-speech of at least ``min_gap_s`` between regions

    def stats_frames(self, frames: int, hop_s: float) -> npt.NDArray[np.bool_] | None:
        """Per feature frame, whether normalisation statistics should include it: the speech
        frames when long gaps would dominate them, else ``None`` (all frames)."""
        if not self.gaps:
            return None
        centres = np.arange(frames) * hop_s
        mask = np.zeros(frames, dtype=bool)
        for start, end in self.regions:
            mask |= (centres >= start) & (centres < end)
        return mask


def crop_to_speech(
    samples: npt.NDArray[np.floating],
    sample_rate: int,
    settings: VadSettings | None = None,
    min_gap_s: float = 1.0,
) -> SpeechCrop | None:
    """The part of a window worth decoding; ``None`` when it holds no speech at all.

    Leading and trailing non-speech of at least ``min_gap_s`` (beyond the regions' padding) is
    cut; shorter edges stay, so that audio with little silence is decoded exactly as it came.
    """
    regions = speech_regions(samples, sample_rate, settings)
    if not regions:
        return None
    duration = len(samples) / sample_rate
    first, last = regions[0][0], regions[-1][1]
    start = round(first * sample_rate) if first >= min_gap_s else 0
    end = round(last * sample_rate) if duration - last >= min_gap_s else len(samples)
    offset = start / sample_rate
    shifted = tuple((a - offset, b - offset) for a, b in regions)
    gaps = any(b[0] - a[1] >= min_gap_s for a, b in itertools.pairwise(regions))
    return SpeechCrop(start, end, shifted, gaps)


def _frames_of(region: Region, frame_seconds: float, total: int) -> slice:
    # Frames that overlap the region; the epsilon keeps 0.16 / 0.04 from flooring to 3.
    start = max(0, min(total, int(np.floor(region[0] / frame_seconds + 1e-6))))
    end = max(start, min(total, int(np.ceil(region[1] / frame_seconds - 1e-6))))
    return slice(start, end)


def no_speech_prob(
    logprobs: npt.NDArray[np.floating],
    frame_seconds: float,
    region: Region | None = None,
    blank: int = -1,
) -> float:
    """The CTC probability that nothing was said in ``region`` (the whole span when None):
    the product of the blank posteriors of its output frames."""
    frames = (
        logprobs if region is None else logprobs[_frames_of(region, frame_seconds, len(logprobs))]
    )
    if frames.shape[0] == 0:
        return 1.0
    total = float(np.sum(np.asarray(frames, dtype=np.float64)[:, blank]))
    return float(np.exp(min(total, 0.0)))
