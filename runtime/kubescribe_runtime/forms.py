"""The transcription form (``POST /v1/audio/transcriptions``), parsed and validated: pure, from
the content type and the form's fields to a :class:`TranscriptionForm` or an
:class:`~kubescribe_runtime.errors.ApiError` (400 / 415) naming the field."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubescribe_runtime.channels import CHANNEL_MODES
from kubescribe_runtime.errors import ApiError
from kubescribe_runtime.formats import GRANULARITIES, RESPONSE_FORMATS

STREAM_FORMATS = ("json", "text")


class Fields(Protocol):
    """A form's fields (werkzeug's MultiDict, or a test's stand-in)."""

    def getlist(self, key: str) -> list[str]: ...


def _get(fields: Fields, name: str) -> str:
    """The field's first value ('' when absent)."""
    values = fields.getlist(name)
    return values[0] if values else ""


@dataclass(frozen=True)
class TranscriptionForm:
    response_format: str
    stream: bool
    channel_mode: str  # kubescribe's extension: "separate" transcribes each channel alone
    granularities: tuple[str, ...]
    language: str  # as asked ('' for none); served() checked it


def parse_transcription_form(
    mimetype: str, fields: Fields, has_file: bool, languages: Callable[[], Sequence[str]]
) -> TranscriptionForm:
    """``languages``: the served ones (called only when a language is asked for; it may raise
    while the model is not ready)."""
    if mimetype != "multipart/form-data":
        raise ApiError(
            415,
            f"expected a multipart/form-data upload, got {mimetype or 'no content type'!r}",
            "unsupported_content_type",
        )
    if not has_file:
        raise ApiError(400, "missing the 'file' field (the audio)", "missing_file", param="file")
    response_format = _choice(fields, "response_format", RESPONSE_FORMATS, "json")
    _temperature(fields)
    stream = _flag(fields, "stream")
    channel_mode = _choice(fields, "channel_mode", CHANNEL_MODES, "mix")
    if stream and channel_mode != "mix":
        raise ApiError(
            400,
            "channel_mode=separate answers once, with every channel: not with stream=true",
            "invalid_channel_mode",
            param="channel_mode",
        )
    if stream and response_format not in STREAM_FORMATS:
        raise ApiError(
            400,
            "stream=true answers server-sent events; response_format must be json or text",
            "invalid_response_format",
            param="response_format",
        )
    granularities = fields.getlist("timestamp_granularities[]")
    granularities += fields.getlist("timestamp_granularities")
    unknown = sorted(set(granularities) - set(GRANULARITIES))
    if unknown:
        raise ApiError(
            400,
            f"unknown timestamp_granularities {unknown}; expected segment or word",
            "invalid_timestamp_granularities",
            param="timestamp_granularities[]",
        )
    if granularities and response_format != "verbose_json":
        raise ApiError(
            400,
            "timestamp_granularities needs response_format=verbose_json",
            "invalid_timestamp_granularities",
            param="timestamp_granularities[]",
        )
    language = _get(fields, "language")
    if language:
        served = languages()
        if language.split("-")[0].lower() not in served:
            raise ApiError(
                400,
                f"language {language!r} is not served; this model speaks {', '.join(served)}",
                "unsupported_language",
                param="language",
            )
    return TranscriptionForm(response_format, stream, channel_mode, tuple(granularities), language)


def _choice(fields: Fields, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = _get(fields, name) or default
    if value not in allowed:
        raise ApiError(
            400,
            f"unknown {name} {value!r}; expected one of {', '.join(allowed)}",
            f"invalid_{name}",
            param=name,
        )
    return value


def _temperature(fields: Fields) -> float:
    """OpenAI's sampling temperature, 0 to 1; greedy CTC decoding does not sample, but a value
    the OpenAI API refuses is refused here too."""
    raw = (_get(fields, "temperature") or "0").strip()
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ApiError(
            400,
            f"temperature must be a number from 0 to 1, got {raw!r}",
            "invalid_temperature",
            param="temperature",
        )
    return value


def _flag(fields: Fields, name: str) -> bool:
    value = (_get(fields, name) or "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(
            400, f"{name} must be true or false, got {value!r}", f"invalid_{name}", param=name
        )
    return value in ("true", "1")
