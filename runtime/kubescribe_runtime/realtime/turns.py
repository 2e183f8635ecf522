"""Server VAD turn-taking on Silero VAD (:mod:`kubescribe_runtime.silero`): its speech
probability per 32 ms chunk, with hysteresis, turned into turns. Pure: samples in, events out.

A turn starts at a chunk that reaches ``threshold`` (OpenAI's ``threshold`` in 0..1 is Silero's
probability threshold, default 0.5) when the next :data:`MIN_SPEECH_S` stay above
``threshold - 0.15`` (Silero's own hysteresis and ``min_speech_duration_ms``), dated back over
the chunks just before it that were already above ``threshold - 0.15`` (a weak onset such as
"s" or "th"); speech goes on while chunks stay above ``threshold - 0.15``;
``silence_duration_ms`` of chunks below it end the turn, dated to the end of its last speech
chunk. A turn longer than ``max_turn_s`` is cut there and, if the caller is still speaking, a new
one starts at the cut.

The model's own CTC blank posteriors are the second signal (as Riva and sherpa-onnx endpoint):
the partial decodes a session already runs show where the model last emitted a token.
:class:`ModelEvidence` keeps, per turn, the stretch the model decoded as all blank (no word ends
in it; the blank ratio of its frames is 1, or nearly: a word the model is unsure of, see
:data:`MIN_WORD_PROB`, counts as blank). A turn whose tail the model hears as blank for
``silence_duration_ms`` ends even while Silero still hears speech (babble, a voice in the
background), and a "turn" the model decodes as all blank from its start, over its first second
(or up to the detector's stop), is not committed. Either way a new turn needs the detector to
hear the sound stop first (:meth:`TurnDetector.end_turn`). The last ``MODEL_LOOKAHEAD_S`` of a
window are no evidence (a word being spoken at a window's right edge may not be emitted yet).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.ctc import Word
from kubescribe_runtime.silero import SileroModel, SpeechProbs
from kubescribe_runtime.vad import MAX_DIP_CHUNKS, NEG_OFFSET

MIN_SPEECH_S = 0.25  # Silero's min_speech_duration_ms: shorter runs are clicks, not speech
_ONSET_LOOKBACK_S = 0.6  # how far back a weak onset may date the start
MODEL_LOOKAHEAD_S = 0.3  # a window's right edge: no blank evidence (words there may come later)
MIN_NOISE_S = 1.0  # all-blank "speech" this long (at least) is noise, not a short word
# A word whose tokens the model gave less than this probability (geometric mean) is heard as
# blank. On a window of noise alone the demo model emits such words (per-feature normalisation
# makes any steady sound look loud): at most 0.68 on tones, hum, white and pink noise, half of
# them under 0.35; on speech rarely (1-1.5 % of the test set's words at 10 dB SNR, white or pink).
MIN_WORD_PROB = 0.7


def confident(word: Word) -> bool:
    return word.logprob >= word.tokens * math.log(MIN_WORD_PROB)


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
    onset_s: float  # where the detector heard speech start
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
        """Nothing heard from the turn's start through ``end_s`` (the detector's speech end)."""
        return (
            not self.heard
            and self.blank_since_s <= self.onset_s
            and self.decoded_until_s - MODEL_LOOKAHEAD_S >= end_s
        )

    def noise(self, silence_s: float) -> bool:
        """Nothing heard over the turn's first ``max(silence_s, MIN_NOISE_S)`` of speech."""
        return self.noise_until(self.onset_s + max(silence_s, MIN_NOISE_S))


class TurnDetector:
    """Feed mono samples (any rate; Silero runs at 8 or 16 kHz) in any chunk sizes; get turn
    events in stream time."""

    def __init__(
        self,
        sample_rate: int,
        threshold: float = 0.5,
        silence_duration_ms: int = 500,
        max_turn_s: float = 30.0,
        model: SileroModel | None = None,
    ) -> None:
        self._probs = SpeechProbs(sample_rate, model)
        self._chunk_s = self._probs.chunk_s
        self._start = threshold
        self._keep = max(0.0, threshold - NEG_OFFSET)
        self._hangover = max(1, round(silence_duration_ms / 1000 / self._chunk_s))
        self._max_turn_chunks = max(1, round(max_turn_s / self._chunk_s))
        self._start_chunks = max(1, round(MIN_SPEECH_S / self._chunk_s))
        lookback = max(1, round(_ONSET_LOOKBACK_S / self._chunk_s))
        self._recent: deque[float] = deque(maxlen=lookback + self._start_chunks)
        self._candidate: int | None = None  # first chunk of a run that may become speech
        self._dip = 0  # chunks of that run below the keep level, in a row
        self._chunks = 0
        self._turn_start = 0  # first chunk of the open turn
        self._last_speech = -1
        self._armed = True  # False after the model ended a turn, until the sound stops
        self._quiet = 0  # chunks below the keep level in a row while not armed
        self.in_turn = False

    @property
    def time_s(self) -> float:
        return self._chunks * self._chunk_s

    def feed(self, samples: npt.NDArray[np.floating]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for prob in self._probs.feed(samples):
            events += self._step(float(prob))
        return events

    def flush(self) -> list[TurnEvent]:
        """End of the stream (or a forced commit): close an open turn at its last speech."""
        if not self.in_turn:
            return []
        self.in_turn = False
        end = (self._last_speech + 1) * self._chunk_s
        return [TurnEvent("stopped", end, self.time_s)]

    def end_turn(self, background_s: float = 0.0) -> None:
        """The model ended (or dropped) the open turn: no event; a new turn needs the detector
        to hear the sound stop first (``silence_duration_ms`` below the keep level), so that
        what the model called non-speech (the last ``background_s``) does not open a turn again
        at its next pause."""
        self.in_turn = False
        self._armed = background_s <= 0.0
        self._quiet = 0

    def _step(self, prob: float) -> list[TurnEvent]:
        index = self._chunks
        self._chunks += 1
        self._recent.append(prob)
        now = self._chunks * self._chunk_s
        if not self.in_turn:
            if not self._armed:  # re-armed once the sound stops as a turn would end
                self._quiet = self._quiet + 1 if prob < self._keep else 0
                self._armed = self._quiet >= self._hangover
            # A run that reaches the threshold and stays above the keep level for
            # MIN_SPEECH_S is speech (shorter: a click, a breath, the onset of a hum).
            if self._candidate is None:
                self._candidate = index if self._armed and prob >= self._start else None
                self._dip = 0
            elif prob < self._keep:
                self._dip += 1
                if self._dip > MAX_DIP_CHUNKS:  # more than a dip between two sounds
                    self._candidate = None
                return []
            else:
                self._dip = 0
            if self._candidate is None or index - self._candidate + 1 < self._start_chunks:
                return []
            first, self._candidate = self._candidate, None
            # Date the start back over the weak onset just before it.
            back = list(self._recent)[: -(index - first + 1)]
            while back and back.pop() >= self._keep:
                first -= 1
            self.in_turn = True
            self._turn_start = first
            self._last_speech = index
            return [TurnEvent("started", first * self._chunk_s, now)]
        if prob >= self._keep:
            self._last_speech = index
        if index - self._turn_start + 1 >= self._max_turn_chunks:
            cut = (index + 1) * self._chunk_s
            self._turn_start = index + 1
            events = [TurnEvent("stopped", cut, now, cut=True)]
            if index - self._last_speech < self._hangover:
                self._last_speech = index
                events.append(TurnEvent("started", cut, now, cut=True))
            else:
                self.in_turn = False
            return events
        if index - self._last_speech >= self._hangover:
            self.in_turn = False
            return [TurnEvent("stopped", (self._last_speech + 1) * self._chunk_s, now)]
        return []
