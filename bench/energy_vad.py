"""The runtime's voice activity detection before Silero VAD (issue 20.5), kept here only as the
"before" of ``bench.nonspeech`` and ``bench.turns``: frame energy over an adaptive noise floor,
with hysteresis (``runtime/kubescribe_runtime/vad.py`` at commit 93532aa^, its energy stage,
unchanged). The runtime does not use it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from kubescribe_runtime.vad import Region, SpeechCrop, SpeechEvent, regions_of, widen

# The level reported for a frame of digital silence (all zeros).
SILENCE_DB = -120.0


@dataclass(frozen=True)
class VadSettings:
    """Thresholds of the energy stage; the defaults suit 16-bit speech recorded at any gain."""

    frame_s: float = 0.02
    # A frame is speech when it is this far above the noise floor (6 dB keeps speech under
    # steady noise at 10 dB SNR; 12 dB cut half of it) ...
    margin_db: float = 6.0
    # ... and above this absolute level (RMS dBFS): quieter frames are never speech.
    min_level_db: float = -50.0
    # How fast the floor follows a louder background (it follows a quieter one at once).
    floor_rise_db_per_s: float = 3.0
    # Speech frames needed to start a region, non-speech frames needed to end it.
    start_s: float = 0.06
    hangover_s: float = 0.3
    # Offline regions are widened by this much on both sides, and merged when closer than twice.
    pad_s: float = 0.3

    def __post_init__(self) -> None:
        if self.frame_s <= 0:
            raise ValueError("frame_s must be positive")
        if min(self.start_s, self.hangover_s, self.pad_s, self.floor_rise_db_per_s) < 0:
            raise ValueError("start_s, hangover_s, pad_s and floor_rise_db_per_s must be >= 0")


def frame_length(sample_rate: int, frame_s: float) -> int:
    return max(1, round(sample_rate * frame_s))


def frame_energies(
    samples: npt.NDArray[np.floating], sample_rate: int, frame_s: float = 0.02
) -> npt.NDArray[np.float64]:
    """RMS level of each whole frame of ``frame_s`` in dBFS (a trailing partial frame is left
    out); digital silence is :data:`SILENCE_DB`."""
    wave = np.asarray(samples, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D), got shape {wave.shape}")
    size = frame_length(sample_rate, frame_s)
    count = len(wave) // size
    power = np.mean(wave[: count * size].reshape(count, size) ** 2, axis=1)
    floor = 10.0 ** (SILENCE_DB / 10.0)
    return 10.0 * np.log10(np.maximum(power, floor))


class SpeechDetector:
    """Streaming energy VAD with an adaptive noise floor and hysteresis.

    Feed mono samples in any chunk sizes with :meth:`feed`; samples that do not fill a frame wait
    for the next chunk. Events are in stream time (seconds since the first sample fed). A
    ``started`` event is dated to the first speech frame of the run that started it, a
    ``stopped`` event to the end of the last speech frame before the hangover.
    """

    def __init__(
        self,
        sample_rate: int,
        settings: VadSettings | None = None,
        initial_floor_db: float | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.settings = settings or VadSettings()
        s = self.settings
        self._frame = frame_length(sample_rate, s.frame_s)
        self._frame_s = self._frame / sample_rate
        self._rise = s.floor_rise_db_per_s * self._frame_s
        self._start_frames = max(1, round(s.start_s / self._frame_s))
        self._stop_frames = max(1, round(s.hangover_s / self._frame_s))
        self._floor = initial_floor_db
        self._pending = np.zeros(0, dtype=np.float64)
        self._frames = 0  # frames classified so far
        self._run = 0  # consecutive frames disagreeing with the current state
        self._run_start = 0  # first frame of that run
        self._last_speech = -1  # last speech frame while in speech
        self.in_speech = False

    @property
    def noise_floor_db(self) -> float | None:
        return self._floor

    @property
    def time_s(self) -> float:
        """Stream time up to which frames were classified."""
        return self._frames * self._frame_s

    def is_speech(self, level_db: float) -> bool:
        """Classify one frame's level, then let the floor follow it."""
        s = self.settings
        if self._floor is None:
            self._floor = level_db
        speech = level_db >= s.min_level_db and level_db >= self._floor + s.margin_db
        self._floor = min(level_db, self._floor + self._rise)
        return speech

    def feed(self, samples: npt.NDArray[np.floating]) -> list[SpeechEvent]:
        """Classify the whole frames now available; the events they caused, in order."""
        wave = np.concatenate([self._pending, np.asarray(samples, dtype=np.float64)])
        usable = len(wave) - len(wave) % self._frame
        self._pending = wave[usable:]
        levels = frame_energies(wave[:usable], self.sample_rate, self.settings.frame_s)
        if self._floor is None and len(levels) >= 10:
            # A first chunk long enough to judge: start from its quiet end, not its first frame.
            self._floor = float(np.percentile(levels, 10))
        events: list[SpeechEvent] = []
        for level in levels:
            event = self._step(self.is_speech(float(level)))
            if event is not None:
                events.append(event)
        return events

    def _step(self, speech: bool) -> SpeechEvent | None:
        index = self._frames
        self._frames += 1
        if speech == self.in_speech:
            self._run = 0
            if speech:
                self._last_speech = index
            return None
        if self._run == 0:
            self._run_start = index
        self._run += 1
        if not self.in_speech and self._run >= self._start_frames:
            self.in_speech = True
            self._run = 0
            self._last_speech = index
            return SpeechEvent("started", self._run_start * self._frame_s)
        if self.in_speech and self._run >= self._stop_frames:
            self.in_speech = False
            self._run = 0
            return SpeechEvent("stopped", (self._last_speech + 1) * self._frame_s)
        return None

    def flush(self) -> list[SpeechEvent]:
        """End of stream: close an open region at its last speech frame."""
        if not self.in_speech:
            return []
        self.in_speech = False
        self._run = 0
        return [SpeechEvent("stopped", (self._last_speech + 1) * self._frame_s)]


def speech_regions(
    samples: npt.NDArray[np.floating], sample_rate: int, settings: VadSettings | None = None
) -> list[Region]:
    """Offline: the speech regions of a whole waveform, padded and merged, in seconds."""
    settings = settings or VadSettings()
    levels = frame_energies(samples, sample_rate, settings.frame_s)
    initial = float(np.percentile(levels, 10)) if len(levels) else None
    detector = SpeechDetector(sample_rate, settings, initial_floor_db=initial)
    events = detector.feed(samples)
    events += detector.flush()
    return widen(regions_of(events), settings.pad_s, len(samples) / sample_rate)


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
