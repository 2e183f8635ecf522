"""One Realtime transcription session as a pure state machine: client frames, decode results
and the drain signal in; server events and decode requests out. No I/O, no clock: time is the
audio's own (samples received), so the same input always gives the same output.

The input buffer holds the audio not yet committed. With server VAD, a turn opens at
``speech_started`` (its audio reaches ``prefix_padding_ms`` before the speech) and is committed
at ``speech_stopped``; without it (``turn_detection: null``), the client commits. While a turn is
open, every ``partial_interval_s`` of new audio its last ``partial_window_s`` are decoded, and
stable words go out as append-only deltas (:mod:`.partials`). With server VAD the same partial
decodes are the model's evidence (:class:`.turns.ModelEvidence`): a turn whose tail the model
decodes as blank for ``silence_duration_ms`` ends there, and detected "speech" the model hears
nothing in is not committed (``speech_stopped`` closes it, no item). A committed turn is decoded
whole, through the file path itself, and its ``completed`` events go out in commit order.

Items as OpenAI's clients expect them: a turn's item is announced (``conversation.item.added``,
or ``conversation.item.created`` in a beta session) before its first delta: at that delta
(before the commit: this server's partials run while the caller speaks) or right after its
``committed`` (as OpenAI sends it), which a GA ``conversation.item.done`` then follows. Every
announced item ends with ``completed`` or ``failed`` (``input_audio_buffer.clear`` during the
turn fails it). With ``include: ["item.input_audio_transcription.logprobs"]`` deltas and
``completed`` carry each word's log-probability (:class:`.events.LogProb`). Server VAD's
``idle_timeout_ms``: that much audio without speech commits what the buffer holds, announced by
``input_audio_buffer.timeout_triggered``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.ctc import Word, text_of
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime import session_config as sc
from kubescribe_runtime.realtime.audio_in import InputAudio, b64_decoded_size, decode_base64
from kubescribe_runtime.realtime.finals import Finals
from kubescribe_runtime.realtime.partials import StablePartials, delta_text
from kubescribe_runtime.realtime.stream_buffer import StreamBuffer
from kubescribe_runtime.realtime.turns import ModelEvidence, TurnDetector, TurnEvent, confident

MIN_COMMIT_S = 0.1  # OpenAI's smallest committable buffer


@dataclass(frozen=True)
class SessionLimits:
    max_append_bytes: int = 1024 * 1024
    partial_interval_s: float = 0.5
    partial_window_s: float = 6.0  # the longest window a partial decodes
    partial_context_s: float = 1.0  # audio before the first word not yet emitted
    min_partial_s: float = 2.0  # the shortest window (the features' statistics need some)
    max_turn_s: float = 30.0


@dataclass(frozen=True)
class DecodeRequest:
    kind: Literal["partial", "final"]
    item_id: str
    samples: npt.NDArray[np.float32]  # at the model's rate
    offset_s: float  # stream time of samples[0]


@dataclass(frozen=True)
class DeltaTiming:
    """Side output for metrics: the stream times at which the words of a delta ended."""

    item_id: str
    word_ends_s: tuple[float, ...]


Output = ev.ServerEvent | DecodeRequest | DeltaTiming


@dataclass
class _Turn:
    item_id: str
    start: int  # first sample, in stream samples
    partials: StablePartials = field(default_factory=StablePartials)
    partial_in_flight: bool = False
    last_partial_at: int = 0  # stream samples when the last partial was asked for
    evidence: ModelEvidence | None = None  # the model's view of a server-VAD turn
    announced: bool = False  # its conversation.item.added (or .created) went out


class Session:
    def __init__(
        self,
        session_id: str,
        model_name: str,
        languages: list[str],
        sample_rate: int,
        limits: SessionLimits | None = None,
        served_names: tuple[str, ...] = (),
    ) -> None:
        self.id = session_id
        self.languages = languages
        self.served_names = served_names  # empty: any transcription model name is accepted
        self.rate = sample_rate
        self.limits = limits or SessionLimits()
        self.config = sc.SessionConfig(model=model_name)
        self.configured = False
        self._counter = 0
        self._audio: InputAudio | None = None
        self._detector: TurnDetector | None = None
        self._detector_offset = 0  # stream sample at which the detector's clock started
        self._buffer = StreamBuffer()  # the audio not yet committed
        self._turn: _Turn | None = None
        self._previous_item: str | None = None
        self._finals = Finals()
        self._idle_since = 0  # stream sample where server VAD last saw speech end (or began)
        self.beta = False  # configured by transcription_session.update: beta event names
        self.audio_seconds = 0.0  # input audio received, for metrics

    # -- ids -------------------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self.id}_{self._counter:05d}"

    def _event(self, event: ev.ServerEvent) -> ev.ServerEvent:
        return event.model_copy(update={"event_id": self._next("event")})

    def _error(self, exc: ev.ProtocolError) -> ev.ServerEvent:
        return self._event(ev.Error.of(exc))

    def error_event(self, code: str, message: str) -> ev.ServerEvent:
        """An ``error`` event the edge sends on its own (limits, timeouts)."""
        return self._error(ev.ProtocolError(code, message))

    # -- the stream clock ------------------------------------------------------------------

    @property
    def _stream_end(self) -> int:
        return self._buffer.end

    def _seconds(self, sample: int) -> float:
        return sample / self.rate

    def _ms(self, sample: int) -> int:
        return round(1000 * sample / self.rate)

    @property
    def stream_s(self) -> float:
        """Audio received so far, in seconds at the model's rate."""
        return self._seconds(self._stream_end)

    @property
    def buffered_s(self) -> float:
        """Audio received and not yet committed (nor dropped), in seconds."""
        return len(self._buffer) / self.rate

    @property
    def pending_finals(self) -> int:
        return len(self._finals)

    @property
    def turn_open(self) -> bool:
        return self._turn is not None

    # -- inputs ----------------------------------------------------------------------------

    def start(self) -> list[Output]:
        return [self._event(ev.SessionCreated(session=sc.session_object(self.id, self.config)))]

    def receive_text(self, text: str) -> list[Output]:
        try:
            event = ev.parse_client_event(text)
            if isinstance(event, ev.SessionUpdate | ev.TranscriptionSessionUpdate):
                return self._update(event)
            if isinstance(event, ev.AppendAudio):
                return self._append(event)
            if isinstance(event, ev.CommitAudio):
                return self._commit(event.event_id)
            return self._clear()
        except ev.ProtocolError as exc:
            return [self._error(exc)]

    def receive_binary(self) -> list[Output]:
        return [
            self._error(
                ev.ProtocolError(
                    "binary_frame_not_supported",
                    "events are JSON text frames; send audio base64-encoded in "
                    "input_audio_buffer.append",
                )
            )
        ]

    def drain(self) -> list[Output]:
        """The server is shutting down: the open turn ends now (its ``completed`` follows)."""
        turn = self._turn
        if turn is None:
            return []
        self._take_resampler_tail()
        out: list[Output] = []
        if self.config.turn_detection is not None:
            end_ms = self._ms(self._stream_end)
            out.append(self._event(ev.SpeechStopped(audio_end_ms=end_ms, item_id=turn.item_id)))
        if self._stream_end - turn.start < MIN_COMMIT_S * self.rate:
            return out + self._end_unfinished("server_shutting_down", "the server is draining")
        return out + self._commit_turn(self._stream_end)

    def decoded(self, request: DecodeRequest, words: list[Word]) -> list[Output]:
        """Words of ``request`` (times relative to its samples)."""
        absolute = [w.shifted(request.offset_s) for w in words]
        if request.kind == "final":
            self._finals.decoded(request.item_id, absolute)
            return self._flush_finals()
        turn = self._turn
        if turn is None or turn.item_id != request.item_id:
            return []  # the turn was committed meanwhile: its final decode takes over
        turn.partial_in_flight = False
        window_end = request.offset_s + len(request.samples) / self.rate
        if turn.evidence is not None:
            heard = [word for word in absolute if confident(word)]
            turn.evidence.saw(request.offset_s, window_end, heard[-1].end if heard else None)
        out: list[Output] = []
        if turn.evidence is None or turn.evidence.heard:
            # (Words of a turn the model has not heard a sure word in yet wait: the turn may
            # be noise, dropped uncommitted, and its item must not have had deltas.)
            stable = turn.partials.update(absolute, window_end)
            first = len(turn.partials.emitted) == len(stable)
            out = self._delta(turn.item_id, stable, first)
            if out and not turn.announced:
                out.insert(0, self._announce(turn.item_id, self._previous_item))
                turn.announced = True
        return out + self._model_endpoint(turn, window_end)

    def decode_failed(self, request: DecodeRequest, message: str) -> list[Output]:
        if request.kind == "partial":
            if self._turn is not None and self._turn.item_id == request.item_id:
                self._turn.partial_in_flight = False
            return []
        self._finals.failed(request.item_id, message)
        return self._flush_finals()

    # -- client events ---------------------------------------------------------------------

    def _update(self, event: ev.SessionUpdate | ev.TranscriptionSessionUpdate) -> list[Output]:
        config = self.config.updated(event)
        language = config.language
        if language and language.split("-")[0].lower() not in self.languages:
            raise ev.ProtocolError(
                "unsupported_language",
                f"language {language!r} is not served; this model speaks "
                + ", ".join(self.languages),
                param="session.audio.input.transcription.language",
                event_id=event.event_id,
            )
        named = config.model
        if self.served_names and named != self.config.model and named not in self.served_names:
            raise ev.ProtocolError(
                "model_not_found",
                f"The model `{named}` does not exist or you do not have access to it.",
                param="session.audio.input.transcription.model",
                event_id=event.event_id,
            )
        model = self.config.model  # the served model, whatever name the client gave
        config = sc.SessionConfig(
            config.format,
            model,
            config.language,
            config.prompt,
            config.turn_detection,
            config.include,
        )
        if self._audio is None or config.format != self.config.format:
            self._audio = InputAudio(config.format, self.rate)
        if self._detector is None or config.turn_detection != self.config.turn_detection:
            self._detector = self._new_detector(config.turn_detection)
        self.config = config
        self.configured = True
        beta = isinstance(event, ev.TranscriptionSessionUpdate)
        self.beta = beta
        session = sc.session_object(self.id, config, beta=beta)
        updated = ev.SessionUpdated(session=session)
        if beta:
            updated = ev.SessionUpdated(type="transcription_session.updated", session=session)
        return [self._event(updated)]

    def _new_detector(self, vad: sc.ServerVad | None) -> TurnDetector | None:
        if vad is None:
            return None
        self._detector_offset = self._stream_end  # its clock starts at the stream's present
        self._idle_since = self._stream_end
        return TurnDetector(
            self.rate, vad.threshold, vad.silence_duration_ms, self.limits.max_turn_s
        )

    def _append(self, event: ev.AppendAudio) -> list[Output]:
        if not self.configured or self._audio is None:
            raise ev.ProtocolError(
                "session_not_configured",
                "send session.update (the audio format, language and turn detection) before audio",
                event_id=event.event_id,
            )
        if b64_decoded_size(event.audio) > self.limits.max_append_bytes:
            raise ev.ProtocolError(
                "audio_append_too_large",
                f"one append may hold at most {self.limits.max_append_bytes} bytes of audio; "
                "send smaller chunks",
                param="audio",
                event_id=event.event_id,
            )
        payload = decode_base64(event.audio, event.event_id)
        samples = self._audio.samples(payload, event.event_id)
        self.audio_seconds += self._audio.input_seconds(payload)
        before = self._stream_end
        self._buffer.append(samples)
        out: list[Output] = []
        if self._detector is not None:
            for turn_event in self._detector.feed(samples):
                out += self._on_turn_event(turn_event)
            if self._turn is None:
                out += self._idle_timeout()
                self._trim_idle()
        else:
            longest = round(self.limits.max_turn_s * self.rate)
            if self._turn is None and self._stream_end > before:
                self._turn = self._open(self._buffer.start)
            while self._turn is not None and self._stream_end - self._turn.start >= longest:
                out += self._commit_turn(self._turn.start + longest)  # cut at its longest
                if self._stream_end > self._buffer.start:
                    self._turn = self._open(self._buffer.start)
        return out + self._maybe_partial()

    def _take_resampler_tail(self) -> None:
        if self._audio is not None:
            tail = self._audio.flush()
            if len(tail):
                self._buffer.append(tail)

    def _commit(self, event_id: str | None) -> list[Output]:
        self._take_resampler_tail()
        end = self._stream_end
        start = self._turn.start if self._turn is not None else self._buffer.start
        if end - start < MIN_COMMIT_S * self.rate:
            raise ev.ProtocolError(
                "input_audio_buffer_commit_empty",
                f"buffer too small: at least {1000 * MIN_COMMIT_S:g} ms of audio are needed "
                f"to commit, the buffer holds {1000 * (end - start) / self.rate:.0f} ms",
                event_id=event_id,
            )
        if self._turn is None:
            self._turn = self._open(start)
        out = self._commit_turn(end)
        if self._detector is not None:
            self._detector = self._new_detector(self.config.turn_detection)
        return out

    def _clear(self) -> list[Output]:
        out = self._end_unfinished("input_audio_buffer_cleared", "the client cleared its audio")
        self._buffer.clear()
        self._detector = self._new_detector(self.config.turn_detection)
        return [self._event(ev.Cleared()), *out]

    def _end_unfinished(self, code: str, message: str) -> list[Output]:
        """The open turn goes uncommitted: its item, if announced, fails."""
        turn, self._turn = self._turn, None
        if turn is None or not turn.announced:
            return []
        error = ev.FailedError(type="invalid_request_error", code=code, message=message)
        return [self._event(ev.TranscriptFailed(item_id=turn.item_id, error=error))]

    def _announce(self, item_id: str, previous: str | None, committed: bool = False) -> Output:
        kind = "conversation.item.created" if self.beta else "conversation.item.added"
        status = "completed" if committed else "in_progress"
        return self._event(ev.ItemEvent.of(kind, item_id, previous, status, None))

    def _idle_timeout(self) -> list[Output]:
        """Server VAD's ``idle_timeout_ms`` of audio without speech: commit what is buffered."""
        vad = self.config.turn_detection
        if vad is None or vad.idle_timeout_ms is None:
            return []
        if self._stream_end - self._idle_since < vad.idle_timeout_ms / 1000 * self.rate:
            return []
        self._turn = self._open(self._buffer.start)
        triggered = ev.TimeoutTriggered(
            audio_start_ms=self._ms(self._idle_since),
            audio_end_ms=self._ms(self._stream_end),
            item_id=self._turn.item_id,
        )
        return [self._event(triggered), *self._commit_turn(self._stream_end)]

    # -- turns -----------------------------------------------------------------------------

    def _open(self, start: int) -> _Turn:
        return _Turn(self._next("item"), start, last_partial_at=start)

    def _trim_idle(self) -> None:
        """Without an open turn, keep only what a turn's prefix padding may need."""
        vad = self.config.turn_detection
        keep = int(((vad.prefix_padding_ms if vad else 0) / 1000 + 1.0) * self.rate)
        self._buffer.keep_last(keep)

    def _on_turn_event(self, turn_event: TurnEvent) -> list[Output]:
        vad = self.config.turn_detection
        assert vad is not None
        at = self._detector_offset + round(turn_event.time_s * self.rate)
        if turn_event.kind == "started":
            padding = 0 if turn_event.cut else round(vad.prefix_padding_ms / 1000 * self.rate)
            start = max(self._buffer.start, at - padding)
            self._turn = self._open(start)
            self._idle_since = self._stream_end
            self._turn.evidence = ModelEvidence(self._seconds(start), self._seconds(at))
            started = ev.SpeechStarted(audio_start_ms=self._ms(start), item_id=self._turn.item_id)
            return [self._event(started)]
        turn = self._turn
        if turn is None:
            return []
        decided = self._detector_offset + round(turn_event.detected_s * self.rate)
        stopped = self._event(ev.SpeechStopped(audio_end_ms=self._ms(at), item_id=turn.item_id))
        if turn.evidence is not None and turn.evidence.noise_until(self._seconds(at)):
            return [stopped, *self._drop_turn(min(decided, self._stream_end))]
        return [stopped, *self._commit_turn(min(decided, self._stream_end))]

    def _model_endpoint(self, turn: _Turn, end_s: float) -> list[Output]:
        """The second signal: what the partial decodes up to ``end_s`` say of the turn."""
        vad = self.config.turn_detection
        if turn.evidence is None or vad is None or self._detector is None:
            return []
        evidence = turn.evidence
        silence_s = vad.silence_duration_ms / 1000
        end = min(round(end_s * self.rate), self._stream_end)
        if evidence.speech_ended(silence_s):
            at = round(evidence.blank_since_s * self.rate)  # the end of the last word heard
            commit = self._commit_turn
        elif evidence.noise(silence_s):
            at, commit = end, self._drop_turn
        else:
            return []
        # The detector may still hear speech (a sound the model hears nothing in): a new turn
        # waits until that sound stops.
        self._detector.end_turn(background_s=evidence.blank_tail_s)
        stopped = ev.SpeechStopped(audio_end_ms=self._ms(at), item_id=turn.item_id)
        return [self._event(stopped), *commit(end)]

    def _drop_turn(self, end: int) -> list[Output]:
        """The open turn was noise: its audio up to stream sample ``end`` goes, uncommitted."""
        out = self._end_unfinished("not_speech", "the turn held no speech")
        self._buffer.drop_until(end)
        self._idle_since = end
        return out

    def _commit_turn(self, end: int) -> list[Output]:
        """Commit the open turn's audio up to stream sample ``end``; ask for its final decode."""
        turn = self._turn
        assert turn is not None
        self._turn = None
        samples = self._buffer.take(turn.start, end)
        self._idle_since = end
        previous = self._previous_item
        out: list[Output] = [
            self._event(ev.Committed(item_id=turn.item_id, previous_item_id=previous))
        ]
        if not turn.announced:
            out.append(self._announce(turn.item_id, previous, committed=True))
        if not self.beta:
            done = ev.ItemEvent.of(
                "conversation.item.done", turn.item_id, previous, "completed", None
            )
            out.append(self._event(done))
        self._previous_item = turn.item_id
        self._finals.add(turn.item_id, len(samples) / self.rate, turn.partials)
        request = DecodeRequest("final", turn.item_id, samples, self._seconds(turn.start))
        return [*out, request]

    def _maybe_partial(self) -> list[Output]:
        turn = self._turn
        interval = round(self.limits.partial_interval_s * self.rate)
        if turn is None or turn.partial_in_flight:
            return []
        if self._stream_end - turn.last_partial_at < interval:
            return []
        # The window: the audio after the words already emitted, with some left context, at
        # least min_partial_s and at most partial_window_s long (what was emitted need not be
        # decoded again: the cost stays a few times real time, however long the turn).
        limits = self.limits
        start_s = self.stream_s - limits.partial_window_s
        emitted_until = turn.partials.emitted_until_s
        if emitted_until > start_s:
            start_s = min(
                self.stream_s - limits.min_partial_s, emitted_until - limits.partial_context_s
            )
        start = max(turn.start, round(start_s * self.rate))
        samples = self._buffer.since(start)
        turn.partial_in_flight = True
        turn.last_partial_at = self._stream_end
        return [DecodeRequest("partial", turn.item_id, samples, self._seconds(start))]

    @property
    def _with_logprobs(self) -> bool:
        return sc.LOGPROBS in self.config.include

    def _delta(self, item_id: str, words: list[Word], first: bool) -> list[Output]:
        if not words:
            return []
        logprobs = ev.LogProb.of_words(words, first) if self._with_logprobs else None
        delta = ev.TranscriptDelta(
            item_id=item_id, delta=delta_text(words, first), logprobs=logprobs
        )
        return [self._event(delta), DeltaTiming(item_id, tuple(w.end for w in words))]

    def _flush_finals(self) -> list[Output]:
        out: list[Output] = []
        for final in self._finals.ready():
            assert final.words is not None
            if final.failed is not None:
                error = ev.FailedError(
                    type="server_error", code="transcription_failed", message=final.failed
                )
                out.append(self._event(ev.TranscriptFailed(item_id=final.item_id, error=error)))
                continue
            first = not final.partials.emitted
            out += self._delta(final.item_id, final.partials.remainder(final.words), first)
            completed = ev.TranscriptCompleted(
                item_id=final.item_id,
                transcript=text_of(final.words),
                usage=ev.DurationUsage(seconds=round(final.seconds, 3)),
                logprobs=ev.LogProb.of_words(final.words, True) if self._with_logprobs else None,
            )
            out.append(self._event(completed))
        return out
