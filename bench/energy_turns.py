"""Server VAD turn-taking before Silero VAD (issue 20.5), kept here only as the "before" of
``bench.turns``: the energy of the speech band over an adaptive noise floor, with hysteresis
(``runtime/kubescribe_runtime/realtime/turns.py`` at commit 93532aa^, its detector, unchanged).
The runtime does not use it.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt
from kubescribe_runtime.realtime.turns import TurnEvent

FRAME_S = 0.02
BAND_HZ = (200.0, 4000.0)
FLOOR_RISE_DB_PER_S = 3.0
PRE_EMPHASIS = 0.7
_START_WINDOW = 5  # frames looked at to start a turn ...
_START_FRAMES = 3  # ... of which this many must be loud
_ONSET_MARGIN_DB = 1.5  # frames before a start this far above the floor belong to the speech
_ONSET_LOOKBACK_S = 0.6
_SILENCE_DB = -120.0
_QUIET_DB = -80.0  # speech-band level of near-digital silence (a muted line, zero padding)
_MIN_SPEECH_DB = -55.0  # quieter frames are never speech, however quiet the background
_SMOOTH_FRAMES = 3  # speech goes on while the level averaged over this many frames stays up


def start_margin_db(threshold: float) -> float:
    """OpenAI's ``threshold`` (0..1, default 0.5) as the margin over the noise floor."""
    return 20.0 * threshold


class BandLevels:
    """Streaming speech-band level of each whole frame, in dB."""

    def __init__(self, sample_rate: int) -> None:
        self.frame = max(1, round(sample_rate * FRAME_S))
        freqs = np.fft.rfftfreq(self.frame, 1.0 / sample_rate)
        self._band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
        self._window = np.hanning(self.frame)
        self._pending = np.zeros(0, dtype=np.float64)
        self._last = 0.0  # the previous sample, for the pre-emphasis across chunks

    def feed(self, samples: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        raw = np.asarray(samples, dtype=np.float64)
        if len(raw) == 0:
            return np.zeros(0)
        # Pre-emphasis flattens low-frequency background (its spectrum falls steeply), whose
        # leakage into the speech band would otherwise keep a pause "loud".
        emphasised = raw - PRE_EMPHASIS * np.concatenate([[self._last], raw[:-1]])
        self._last = float(raw[-1])
        wave = np.concatenate([self._pending, emphasised])
        count = len(wave) // self.frame
        self._pending = wave[count * self.frame :]
        if count == 0:
            return np.zeros(0)
        frames = wave[: count * self.frame].reshape(count, self.frame) * self._window
        spectrum = np.fft.rfft(frames, axis=1)[:, self._band]
        power = np.mean(np.abs(spectrum) ** 2, axis=1) / self.frame
        return 10.0 * np.log10(np.maximum(power, 10.0 ** (_SILENCE_DB / 10.0)))


class TurnDetector:
    """Feed 16 kHz (any rate) mono samples in any chunk sizes; get turn events in stream time."""

    def __init__(
        self,
        sample_rate: int,
        threshold: float = 0.5,
        silence_duration_ms: int = 500,
        max_turn_s: float = 30.0,
    ) -> None:
        self._levels = BandLevels(sample_rate)
        self._frame_s = self._levels.frame / sample_rate
        self._start_db = start_margin_db(threshold)
        self._keep_db = self._start_db / 2
        self._hangover = max(1, round(silence_duration_ms / 1000 / self._frame_s))
        self._max_turn_frames = max(1, round(max_turn_s / self._frame_s))
        self._rise = FLOOR_RISE_DB_PER_S * self._frame_s
        self._lookback = max(1, round(_ONSET_LOOKBACK_S / self._frame_s))
        self._floor: float | None = None
        self._above: list[float] = []  # recent levels over the floor (dB), newest last
        self._recent: list[float] = []  # the last few frames' powers, for the smoothed level
        self._loud: list[bool] = []  # recent "start-loud" flags while idle
        self._history: deque[float] = deque(maxlen=max(1, round(1.0 / self._frame_s)))
        self._frames = 0
        self._turn_start = 0  # first frame of the open turn
        self._last_speech = -1
        self.in_turn = False

    @property
    def time_s(self) -> float:
        return self._frames * self._frame_s

    def feed(self, samples: npt.NDArray[np.floating]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for level in self._levels.feed(samples):
            event = self._step(float(level))
            if event:
                events += event
        return events

    def flush(self) -> list[TurnEvent]:
        """End of the stream (or a forced commit): close an open turn at its last speech."""
        if not self.in_turn:
            return []
        self.in_turn = False
        self._loud = []
        end = (self._last_speech + 1) * self._frame_s
        return [TurnEvent("stopped", end, self.time_s)]

    def end_turn(self, background_s: float = 0.0) -> None:
        """The model ended (or dropped) the open turn: wait for a new start, no event. The
        model heard the last ``background_s`` (at most 1 s) as non-speech: their median level
        becomes the noise floor, so that the same sound does not start a turn again."""
        self.in_turn = False
        self._loud = []
        count = min(len(self._history), round(background_s / self._frame_s))
        if count > 0 and self._floor is not None:
            recent = sorted(list(self._history)[-count:])
            self._floor = max(self._floor, recent[len(recent) // 2])

    def _step(self, level: float) -> list[TurnEvent] | None:
        index = self._frames
        self._frames += 1
        self._recent = [*self._recent[-(_SMOOTH_FRAMES - 1) :], 10.0 ** (level / 10.0)]
        if level < _QUIET_DB:
            # (Near-)digital silence is no background to measure speech against: it neither
            # lowers the floor nor counts as speech.
            over = smoothed = -np.inf
        else:
            self._history.append(level)
            if self._floor is None:
                self._floor = level
            over = level - self._floor
            smoothed = 10.0 * np.log10(np.mean(self._recent)) - self._floor
            self._floor = min(level, self._floor + self._rise)
            if level < _MIN_SPEECH_DB:
                over = smoothed = min(over, 0.0)
        self._above = [*self._above[-self._lookback :], over]
        now = self._frames * self._frame_s
        if not self.in_turn:
            self._loud = [*self._loud[-(_START_WINDOW - 1) :], over >= self._start_db]
            if sum(self._loud) < _START_FRAMES:
                return None
            first = index - len(self._loud) + 1 + self._loud.index(True)
            # Date the start back over the weak onset just before it.
            back = len(self._above) - 1 - (index - first)
            while back > 0 and self._above[back - 1] >= _ONSET_MARGIN_DB:
                back -= 1
                first -= 1
            self.in_turn = True
            self._turn_start = first
            self._last_speech = index
            return [TurnEvent("started", first * self._frame_s, now)]
        if smoothed >= self._keep_db:
            self._last_speech = index
        if index - self._turn_start + 1 >= self._max_turn_frames:
            cut = (index + 1) * self._frame_s
            self._turn_start = index + 1
            events = [TurnEvent("stopped", cut, now, cut=True)]
            if index - self._last_speech < self._hangover:
                self._last_speech = index
                events.append(TurnEvent("started", cut, now, cut=True))
            else:
                self.in_turn = False
                self._loud = []
            return events
        if index - self._last_speech >= self._hangover:
            self.in_turn = False
            self._loud = []
            return [TurnEvent("stopped", (self._last_speech + 1) * self._frame_s, now)]
        return None
