"""Response formats: json, text, verbose_json (segments, words), srt, vtt."""

from __future__ import annotations

import json

import pytest
from kubescribe_runtime.ctc import Word, segments_of
from kubescribe_runtime.formats import render
from kubescribe_runtime.transcriber import Transcript

WORDS = [Word("hello", 0.5, 0.9), Word("there", 1.0, 1.4), Word("again", 3661.25, 3661.5)]
TRANSCRIPT = Transcript(
    text="hello there again",
    words=WORDS,
    segments=segments_of(WORDS),
    duration_s=3662.0,
    language="en",
)


def test_json_and_text() -> None:
    body, content_type = render(TRANSCRIPT, "json")
    assert json.loads(body) == {"text": "hello there again"}
    assert content_type == "application/json"
    assert render(TRANSCRIPT, "text") == ("hello there again\n", "text/plain; charset=utf-8")


def test_verbose_json_with_words_and_segments() -> None:
    body = json.loads(render(TRANSCRIPT, "verbose_json", ["word", "segment"])[0])
    assert body["duration"] == 3662.0 and body["language"] == "en"
    assert body["words"] == [
        {"word": "hello", "start": 0.5, "end": 0.9},
        {"word": "there", "start": 1.0, "end": 1.4},
        {"word": "again", "start": 3661.25, "end": 3661.5},
    ]
    assert [(s["id"], s["text"], s["start"], s["end"]) for s in body["segments"]] == [
        (0, "hello there", 0.5, 1.4),
        (1, "again", 3661.25, 3661.5),
    ]
    words_only = json.loads(render(TRANSCRIPT, "verbose_json", ["word"])[0])
    assert "segments" not in words_only and len(words_only["words"]) == 3
    default = json.loads(render(TRANSCRIPT, "verbose_json")[0])
    assert "segments" in default and "words" not in default


def test_srt_and_vtt() -> None:
    srt, _ = render(TRANSCRIPT, "srt")
    assert srt == (
        "1\n00:00:00,500 --> 00:00:01,400\nhello there\n\n2\n01:01:01,250 --> 01:01:01,500\nagain\n"
    )
    vtt, content_type = render(TRANSCRIPT, "vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:01.400\nhello there\n")
    assert content_type.startswith("text/vtt")


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown response_format"):
        render(TRANSCRIPT, "docx")
