"""Server VAD turn-taking without downloaded weights: the energy of the speech band over an
adaptive noise floor, with hysteresis, turned into turns. Pure: samples in, events out.

Each 20 ms frame's level is measured in the speech band (200–4000 Hz) after pre-emphasis:
full-band energy is dominated by low-frequency background such as traffic rumble, which hides
speech and, leaking into the band, makes pauses look loud. The noise floor
follows a quieter frame at once and rises slowly (3 dB/s) under a louder background, so
stationary noise of any level never opens a turn. A turn starts when 3 of 5 frames are
``start_margin_db`` above the floor (the OpenAI ``threshold`` in 0..1 scales it: 0.5 → 10 dB),
dated back over the frames just before it that were already slightly above the floor (a weak
onset such as "s" or "th"); speech goes on while frames stay half that margin above the floor
(frames below an absolute level are never speech, and near-digital silence does not lower the
floor: a muted stretch must not make the line noise after it look like speech);
``silence_duration_ms`` of quieter frames ends the turn, dated to the end of its last speech
frame. A turn longer than ``max_turn_s`` is cut there and, if the caller is still speaking, a new
one starts at the cut.

The model's own CTC blank posteriors are the second signal (as Riva and sherpa-onnx endpoint):
the partial decodes a session already runs show where the model last emitted a token.
:class:`ModelEvidence` keeps, per turn, the stretch the model decoded as all blank (no word ends
in it; the blank ratio of its frames is 1, or nearly: a word the model is unsure of, see
:data:`MIN_WORD_PROB`, counts as blank). A turn whose tail the model hears as blank for
``silence_duration_ms`` ends even while the energy stays up (steady noise after the speech), and
a "turn" the model decodes as all blank from its start, over its first second of energy speech
(or up to the energy's stop), is noise: it is not committed. Either way the level the model
called non-speech becomes the noise floor (:meth:`TurnDetector.end_turn`). The last
``MODEL_LOOKAHEAD_S`` of a window are no evidence (a word being spoken at a window's right edge
may not be emitted yet).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.ctc import Word

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
MODEL_LOOKAHEAD_S = 0.3  # a window's right edge: no blank evidence (words there may come later)
MIN_NOISE_S = 1.0  # all-blank energy "speech" this long (at least) is noise, not a short word
# A word whose tokens the model gave less than this probability (geometric mean) is heard as
# blank. On a window of noise alone the demo model emits such words (per-feature normalisation
# makes any steady sound look loud): at most 0.68 on tones, hum, white and pink noise, half of
# them under 0.35; on speech rarely (1-1.5 % of the test set's words at 10 dB SNR, white or pink).
MIN_WORD_PROB = 0.7


def confident(word: Word) -> bool:
    return word.logprob >= word.tokens * math.log(MIN_WORD_PROB)


def start_margin_db(threshold: float) -> float:
    """OpenAI's ``threshold`` (0..1, default 0.5) as the margin over the noise floor."""
    return 20.0 * threshold


@dataclass(frozen=True)
class TurnEvent:
    kind: str  # "started" | "stopped"
    time_s: float  # speech start, or the end of the last speech frame (stream time)
    detected_s: float  # stream time at which it was decided
    cut: bool = False  # stopped (or restarted) because the turn reached its longest duration


@dataclass
class ModelEvidence:
    """What the model's partial decodes say about one open turn (stream seconds).

    ``blank_since_s``: the start of the trailing stretch decoded as all blank (the end of the
    last word heard, or the turn's start while nothing was heard); ``decoded_until_s``: the end
    of the audio decoded so far.
    """

    start_s: float  # the turn's first sample (with its padding)
    onset_s: float  # where the energy detector heard speech start
    heard: bool = False
    blank_since_s: float = 0.0
    decoded_until_s: float = 0.0

    def __post_init__(self) -> None:
        self.blank_since_s = self.decoded_until_s = self.start_s

    def saw(
        self, window_start_s: float, window_end_s: float, last_word_end_s: float | None
    ) -> None:
        """A partial decode of ``[window_start_s, window_end_s)`` ended its last word at
        ``last_word_end_s`` (None: the window decoded as all blank)."""
        if last_word_end_s is not None:
            self.heard = True
            self.blank_since_s = max(self.blank_since_s, last_word_end_s)
        elif window_start_s > self.decoded_until_s:  # audio the model never saw: no evidence
            self.blank_since_s = window_start_s
        self.decoded_until_s = max(self.decoded_until_s, window_end_s)

    @property
    def blank_tail_s(self) -> float:
        """How long the model has heard nothing at the end of what it decoded."""
        return max(0.0, self.decoded_until_s - MODEL_LOOKAHEAD_S - self.blank_since_s)

    def speech_ended(self, silence_s: float) -> bool:
        """The model heard words, then ``silence_s`` of blank: the turn is over."""
        return self.heard and self.blank_tail_s >= silence_s

    def noise_until(self, end_s: float) -> bool:
        """Nothing heard from the turn's start through ``end_s`` (the energy's speech end)."""
        return (
            not self.heard
            and self.blank_since_s <= self.onset_s
            and self.decoded_until_s - MODEL_LOOKAHEAD_S >= end_s
        )

    def noise(self, silence_s: float) -> bool:
        """Nothing heard over the turn's first ``max(silence_s, MIN_NOISE_S)`` of energy speech."""
        return self.noise_until(self.onset_s + max(silence_s, MIN_NOISE_S))


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
