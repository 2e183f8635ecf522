"""The Realtime transcription protocol's events, as OpenAI's GA API shapes them (and the beta
``transcription_session.update``): client events are parsed into pydantic models once, here;
server events are pydantic models rendered to JSON text. No I/O.

A client event that cannot be parsed raises :class:`ProtocolError`, which the session turns
into an ``error`` event naming the offending ``event_id`` (when the client gave one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubescribe.errors import KubescribeError
from kubescribe_runtime.ctc import Word

# -- errors --------------------------------------------------------------------------------


class ProtocolError(KubescribeError):
    """A client event the session refuses; becomes an ``error`` event (the session goes on)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.type = type_


# -- client events -------------------------------------------------------------------------


class _In(BaseModel):
    # Unknown fields are ignored, as newer clients send options this server has no use for.
    model_config = ConfigDict(extra="ignore", frozen=True)


class PcmFormat(_In):
    type: Literal["audio/pcm"]
    rate: Literal[24000] = 24000


class PcmuFormat(_In):
    type: Literal["audio/pcmu"]


class PcmaFormat(_In):
    type: Literal["audio/pcma"]


AudioFormat = Annotated[PcmFormat | PcmuFormat | PcmaFormat, Field(discriminator="type")]


class TranscriptionIn(_In):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


class ServerVadIn(_In):
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=5000)
    silence_duration_ms: int = Field(500, ge=100, le=10000)
    idle_timeout_ms: int | None = Field(None, ge=1000, le=600_000)


class SemanticVadIn(_In):
    """Mapped onto server VAD: the eagerness picks the silence that ends a turn."""

    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


TurnDetectionIn = Annotated[ServerVadIn | SemanticVadIn, Field(discriminator="type")]


class AudioInputIn(_In):
    format: AudioFormat | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    noise_reduction: Any = None


class AudioIn(_In):
    input: AudioInputIn | None = None


class SessionIn(_In):
    type: Literal["transcription"]
    audio: AudioIn | None = None
    include: list[str] | None = None


class BetaSessionIn(_In):
    """The beta ``transcription_session.update`` session: flat fields."""

    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    input_audio_transcription: TranscriptionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    input_audio_noise_reduction: Any = None
    include: list[str] | None = None


class SessionUpdate(_In):
    type: Literal["session.update"]
    event_id: str | None = None
    session: SessionIn


class TranscriptionSessionUpdate(_In):
    type: Literal["transcription_session.update"]
    event_id: str | None = None
    session: BetaSessionIn


class AppendAudio(_In):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = None
    audio: str


class CommitAudio(_In):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class ClearAudio(_In):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


ClientEvent = SessionUpdate | TranscriptionSessionUpdate | AppendAudio | CommitAudio | ClearAudio
_CLIENT_EVENTS: dict[str, type[_In]] = {
    "session.update": SessionUpdate,
    "transcription_session.update": TranscriptionSessionUpdate,
    "input_audio_buffer.append": AppendAudio,
    "input_audio_buffer.commit": CommitAudio,
    "input_audio_buffer.clear": ClearAudio,
}


_TAGS = frozenset({"audio/pcm", "audio/pcmu", "audio/pcma", "server_vad", "semantic_vad"})


def _param(error: Any) -> str:
    """The field an error is about, as the client wrote it (a union's tag is not a field)."""
    parts = [str(part) for part in error["loc"] if part not in _TAGS]
    if error["type"] == "union_tag_invalid":
        parts.append("type")
    return ".".join(parts)


def parse_client_event(text: str) -> ClientEvent:
    """One text frame → a client event, or :class:`ProtocolError`."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"the message is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("invalid_event", "an event must be a JSON object")
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "missing_event_type", "the event has no 'type' string", param="type", event_id=event_id
        )
    model = _CLIENT_EVENTS.get(kind)
    if model is None:
        shown = kind if len(kind) <= 40 else kind[:40] + "…"  # never echo a long input back
        raise ProtocolError(
            "unknown_event_type",
            f"unknown event type {shown!r}; a transcription session takes "
            + ", ".join(_CLIENT_EVENTS),
            param="type",
            event_id=event_id,
        )
    try:
        event: ClientEvent = model.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _param(first)
        if where == "session.type":
            raise ProtocolError(
                "unsupported_session_type",
                "this server serves transcription sessions only: session.type must be "
                "'transcription' (connect with ?intent=transcription)",
                param=where,
                event_id=event_id,
            ) from exc
        raise ProtocolError(
            "invalid_value", f"{where}: {first['msg']}", param=where, event_id=event_id
        ) from exc
    return event


# -- server events -------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)
    event_id: str = ""

    def render(self) -> str:
        return self.model_dump_json()


class SessionCreated(_Out):
    type: Literal["session.created"] = "session.created"
    session: dict[str, Any]


class SessionUpdated(_Out):
    type: Literal["session.updated", "transcription_session.updated"] = "session.updated"
    session: dict[str, Any]


class SpeechStarted(_Out):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(_Out):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class Committed(_Out):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None


class Cleared(_Out):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class TimeoutTriggered(_Out):
    type: Literal["input_audio_buffer.timeout_triggered"] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class ItemEvent(_Out):
    """The user message item of a turn: ``added`` (GA, or ``created`` in a beta session) before
    anything else names it, ``done`` (GA) once its audio is committed."""

    type: Literal["conversation.item.added", "conversation.item.done", "conversation.item.created"]
    previous_item_id: str | None
    item: dict[str, Any]

    @classmethod
    def of(
        cls, kind: str, item_id: str, previous: str | None, status: str, transcript: str | None
    ) -> ItemEvent:
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": status,
            "content": [{"type": "input_audio", "transcript": transcript}],
        }
        return cls(type=kind, previous_item_id=previous, item=item)  # type: ignore[arg-type]


class LogProb(BaseModel):
    """A word's log-probability: the sum of its tokens' CTC posteriors on the best path."""

    token: str
    bytes: list[int]
    logprob: float

    @classmethod
    def of(cls, token: str, logprob: float) -> LogProb:
        return cls(token=token, bytes=list(token.encode("utf-8")), logprob=round(logprob, 4))

    @classmethod
    def of_words(cls, words: Sequence[Word], first: bool) -> list[LogProb]:
        """One entry a word, spelt as the text has it: a space before each word but the
        turn's ``first``."""
        return [
            cls.of(w.word if first and i == 0 else " " + w.word, w.logprob)
            for i, w in enumerate(words)
        ]


class TranscriptDelta(_Out):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str
    logprobs: list[LogProb] | None = None


class DurationUsage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class TranscriptCompleted(_Out):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage
    logprobs: list[LogProb] | None = None


class FailedError(BaseModel):
    type: str
    code: str
    message: str


class TranscriptFailed(_Out):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: FailedError


class ErrorBody(BaseModel):
    type: str
    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


class Error(_Out):
    type: Literal["error"] = "error"
    error: ErrorBody

    @classmethod
    def of(cls, exc: ProtocolError) -> Error:
        return cls(
            error=ErrorBody(
                type=exc.type,
                code=exc.code,
                message=exc.message,
                param=exc.param,
                event_id=exc.event_id,
            )
        )


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | Committed
    | Cleared
    | TimeoutTriggered
    | ItemEvent
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | Error
)
