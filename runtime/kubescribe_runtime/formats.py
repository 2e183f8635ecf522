"""OpenAI-style response bodies: json, text, verbose_json, srt, vtt. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, Literal

from kubescribe_runtime.ctc import Segment
from kubescribe_runtime.transcriber import Transcript

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES: tuple[str, ...] = ("segment", "word")
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(segments: list[Segment]) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: list[Segment]) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def verbose(transcript: Transcript, granularities: Collection[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": transcript.language,
        "duration": round(transcript.duration_s, 3),
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(s.avg_logprob, 4),
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
            for s in transcript.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in transcript.words
        ]
    return body


def render(
    transcript: Transcript, response_format: str, granularities: Collection[str] = ()
) -> tuple[str, str]:
    """(body, content type) of ``transcript`` in ``response_format``."""
    if response_format == "json":
        body = json.dumps({"text": transcript.text}, ensure_ascii=False)
    elif response_format == "verbose_json":
        body = json.dumps(verbose(transcript, granularities), ensure_ascii=False)
    elif response_format == "text":
        body = transcript.text + "\n"
    elif response_format == "srt":
        body = to_srt(transcript.segments)
    elif response_format == "vtt":
        body = to_vtt(transcript.segments)
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, CONTENT_TYPES[response_format]
