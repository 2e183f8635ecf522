"""A realtime session's effective configuration: what ``session.update`` (GA) or
``transcription_session.update`` (beta) asked for, merged field by field, and the session as
``session.created`` / ``session.updated`` show it (the official types' shapes). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from kubescribe_runtime.realtime.events import (
    SemanticVadIn,
    ServerVadIn,
    SessionUpdate,
    TranscriptionSessionUpdate,
)

# semantic_vad's eagerness → the silence (ms) that ends a turn: OpenAI waits at most 8, 4 and 2 s
# for low, medium and high; this server has no model of a finished sentence, so it waits for a
# pause, longer the less eager.
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}
LOGPROBS = "item.input_audio_transcription.logprobs"
INCLUDABLE = (LOGPROBS,)


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
    idle_timeout_ms: int | None = None
    eagerness: str | None = None  # set: the client asked for semantic_vad (mapped onto this)

    @classmethod
    def of(cls, given: ServerVadIn | SemanticVadIn) -> ServerVad:
        if isinstance(given, SemanticVadIn):
            silence = SEMANTIC_SILENCE_MS[given.eagerness]
            return cls(silence_duration_ms=silence, eagerness=given.eagerness)
        return cls(
            given.threshold,
            given.prefix_padding_ms,
            given.silence_duration_ms,
            given.idle_timeout_ms,
        )


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
            config = replace(config, turn_detection=None if vad is None else ServerVad.of(vad))
        if include is not None:  # (what this server cannot include is left out)
            config = replace(config, include=tuple(i for i in include if i in INCLUDABLE))
        return config


_GA_FORMAT_OUT: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "pcmu": {"type": "audio/pcmu"},
    "pcma": {"type": "audio/pcma"},
}


def _vad_out(vad: ServerVad | None, beta: bool = False) -> dict[str, Any] | None:
    if vad is None:
        return None
    if vad.eagerness is not None:
        return {"type": "semantic_vad", "eagerness": vad.eagerness}
    out: dict[str, Any] = {
        "type": "server_vad",
        "threshold": vad.threshold,
        "prefix_padding_ms": vad.prefix_padding_ms,
        "silence_duration_ms": vad.silence_duration_ms,
    }
    if vad.idle_timeout_ms is not None and not beta:
        out["idle_timeout_ms"] = vad.idle_timeout_ms
    return out


# The beta session type names the models it knows; another name is shown as null there.
_BETA_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1")


def session_object(session_id: str, config: SessionConfig, beta: bool = False) -> dict[str, Any]:
    """The session as ``session.created`` / ``session.updated`` show it (GA, or beta shape)."""
    transcription = {"model": config.model, "language": config.language, "prompt": config.prompt}
    if beta:
        beta_format = {v: k for k, v in _BETA_FORMATS.items()}[config.format]
        model = config.model if config.model in _BETA_MODELS else None
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            # The beta type requires it though a WebSocket session has none: no key.
            "client_secret": {"value": "", "expires_at": 0},
            "input_audio_format": beta_format,
            "input_audio_transcription": transcription | {"model": model},
            "turn_detection": _vad_out(config.turn_detection, beta=True),
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
