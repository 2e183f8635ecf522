"""The Realtime transcription protocol's events, as OpenAI's GA API shapes them (and the beta
``transcription_session.update``): client events are parsed into pydantic models once, here;
server events are pydantic models rendered to JSON text. No I/O.

A client event that cannot be parsed raises :class:`ProtocolError`, which the session turns
into an ``error`` event naming the offending ``event_id`` (when the client gave one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubescribe.errors import KubescribeError

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


class AudioInputIn(_In):
    format: AudioFormat | None = None
    transcription: TranscriptionIn | None = None
    turn_detection: ServerVadIn | None = None
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
    turn_detection: ServerVadIn | None = None
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


def _param(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


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
        raise ProtocolError(
            "unknown_event_type",
            f"unknown event type {kind!r}; a transcription session takes "
            + ", ".join(_CLIENT_EVENTS),
            param="type",
            event_id=event_id,
        )
    try:
        event: ClientEvent = model.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _param(first["loc"])
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


# -- the session's effective configuration -------------------------------------------------

InputFormat = Literal["pcm16", "pcmu", "pcma"]
_GA_FORMATS: dict[str, InputFormat] = {
    "audio/pcm": "pcm16",
    "audio/pcmu": "pcmu",
    "audio/pcma": "pcma",
}
_BETA_FORMATS: dict[str, InputFormat] = {
    "pcm16": "pcm16",
    "g711_ulaw": "pcmu",
    "g711_alaw": "pcma",
}


@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    format: InputFormat = "pcm16"
    model: str = ""
    language: str | None = None
    prompt: str | None = None
    turn_detection: ServerVad | None = ServerVad()
    include: tuple[str, ...] = ()

    def updated(self, event: SessionUpdate | TranscriptionSessionUpdate) -> SessionConfig:
        """Only the fields present in the update change (``turn_detection: null`` turns server
        VAD off: the client commits)."""
        if isinstance(event, SessionUpdate):
            session = event.session
            given = session.audio.input if session.audio and session.audio.input else None
            fmt = given.format.type if given and given.format else None
            new_format = _GA_FORMATS[fmt] if fmt else None
            transcription = given.transcription if given else None
            vad_given = given is not None and "turn_detection" in given.model_fields_set
            vad = given.turn_detection if given else None
            include = session.include
        else:
            beta = event.session
            new_format = _BETA_FORMATS[beta.input_audio_format] if beta.input_audio_format else None
            transcription = beta.input_audio_transcription
            vad_given = "turn_detection" in beta.model_fields_set
            vad = beta.turn_detection
            include = beta.include
        config = self
        if new_format:
            config = replace(config, format=new_format)
        if transcription is not None:
            fields = transcription.model_fields_set
            config = replace(
                config,
                model=transcription.model or config.model,
                language=transcription.language if "language" in fields else config.language,
                prompt=transcription.prompt if "prompt" in fields else config.prompt,
            )
        if vad_given:
            config = replace(
                config,
                turn_detection=None
                if vad is None
                else ServerVad(vad.threshold, vad.prefix_padding_ms, vad.silence_duration_ms),
            )
        if include is not None:
            config = replace(config, include=tuple(include))
        return config


_GA_FORMAT_OUT: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "pcmu": {"type": "audio/pcmu"},
    "pcma": {"type": "audio/pcma"},
}


def _vad_out(vad: ServerVad | None) -> dict[str, Any] | None:
    if vad is None:
        return None
    return {
        "type": "server_vad",
        "threshold": vad.threshold,
        "prefix_padding_ms": vad.prefix_padding_ms,
        "silence_duration_ms": vad.silence_duration_ms,
    }


def session_object(session_id: str, config: SessionConfig, beta: bool = False) -> dict[str, Any]:
    """The session as ``session.created`` / ``session.updated`` show it (GA, or beta shape)."""
    transcription = {"model": config.model, "language": config.language, "prompt": config.prompt}
    if beta:
        beta_format = {v: k for k, v in _BETA_FORMATS.items()}[config.format]
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": beta_format,
            "input_audio_transcription": transcription,
            "turn_detection": _vad_out(config.turn_detection),
            "input_audio_noise_reduction": None,
            "include": list(config.include),
        }
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "audio": {
            "input": {
                "format": _GA_FORMAT_OUT[config.format],
                "transcription": transcription,
                "turn_detection": _vad_out(config.turn_detection),
                "noise_reduction": None,
            }
        },
        "include": list(config.include),
    }


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


class TranscriptDelta(_Out):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


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
    | TranscriptDelta
    | TranscriptCompleted
    | TranscriptFailed
    | Error
)
