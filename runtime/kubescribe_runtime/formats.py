"""OpenAI-style response bodies: json, text, verbose_json, srt, vtt. Pure functions.

Fidelity to OpenAI's API: no timestamp lies beyond ``duration`` (a word's last frame may end a
little after the audio); ``avg_logprob`` is the mean log-probability of a segment's tokens;
``no_speech_prob`` comes from the blank posteriors. Captions (srt, vtt) are cut into cues by
the usual subtitle rules instead of reusing the segments: at most two lines of about
:data:`CUE_LINE_CHARS` characters and about :data:`CUE_MAX_S` seconds per cue, a new cue at
every pause of :data:`~kubescribe_runtime.ctc.SEGMENT_PAUSE_S`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kubescribe_runtime.ctc import SEGMENT_PAUSE_S, Word
from kubescribe_runtime.transcriber import Transcript

RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "verbose_json", "srt", "vtt")
GRANULARITIES: tuple[str, ...] = ("segment", "word")
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


CUE_LINE_CHARS = 42
CUE_LINES = 2
CUE_MAX_S = 7.0


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def _wrap(words: Sequence[str], width: int) -> list[str]:
    """Greedy line filling; a word longer than ``width`` gets a line of its own."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def caption_cues(
    words: Sequence[Word],
    width: int = CUE_LINE_CHARS,
    max_lines: int = CUE_LINES,
    max_s: float = CUE_MAX_S,
    pause_s: float = SEGMENT_PAUSE_S,
) -> list[Cue]:
    """Subtitle cues: a new cue at a pause, when ``max_s`` would pass, or when the text would
    need more than ``max_lines`` lines of ``width`` characters."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word.start - current[-1].end >= pause_s
            or word.end - current[0].start > max_s
            or word.channel != current[-1].channel
            or len(_wrap([w.word for w in [*current, word]], width)) > max_lines
        ):
            groups.append([word])
        else:
            current.append(word)
    return [
        Cue(group[0].start, group[-1].end, tuple(_wrap([w.word for w in group], width)))
        for group in groups
    ]


def within_duration(transcript: Transcript) -> Transcript:
    """Every timestamp clamped to ``[0, duration]``."""
    limit = max(transcript.duration_s, 0.0)

    def clamp(t: float) -> float:
        return min(max(t, 0.0), limit)

    return replace(
        transcript,
        words=[replace(w, start=clamp(w.start), end=clamp(w.end)) for w in transcript.words],
        segments=[replace(s, start=clamp(s.start), end=clamp(s.end)) for s in transcript.segments],
    )


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues_of(transcript: Transcript) -> list[Cue]:
    if transcript.words or not transcript.segments:
        return caption_cues(transcript.words)
    return [  # no word timings: the segments, wrapped
        Cue(s.start, s.end, tuple(_wrap(s.text.split(), CUE_LINE_CHARS)))
        for s in transcript.segments
    ]


def to_srt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
        for i, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n" + "\n".join(c.lines) + "\n"
        for c in cues
    ]
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
                "no_speech_prob": round(s.no_speech_prob, 4),
                **_channel(s.channel),
            }
            for s in transcript.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {
                "word": w.word,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                **_channel(w.channel),
            }
            for w in transcript.words
        ]
    return body


def _channel(channel: int | None) -> dict[str, int]:
    """The ``channel`` field (kubescribe's extension) where channels were transcribed apart."""
    return {} if channel is None else {"channel": channel}


def render(
    transcript: Transcript, response_format: str, granularities: Collection[str] = ()
) -> tuple[str, str]:
    """(body, content type) of ``transcript`` in ``response_format``."""
    transcript = within_duration(transcript)
    if response_format == "json":
        body = json.dumps({"text": transcript.text}, ensure_ascii=False)
    elif response_format == "verbose_json":
        body = json.dumps(verbose(transcript, granularities), ensure_ascii=False)
    elif response_format == "text":
        body = transcript.text + "\n"
    elif response_format == "srt":
        body = to_srt(_cues_of(transcript))
    elif response_format == "vtt":
        body = to_vtt(_cues_of(transcript))
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, CONTENT_TYPES[response_format]
