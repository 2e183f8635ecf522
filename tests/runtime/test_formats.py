"""Response formats: json, text, verbose_json (segments, words), srt, vtt."""

from __future__ import annotations

import dataclasses
import json

import pytest
from kubescribe_runtime import formats
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


# -- fidelity to OpenAI's API -----------------------------------------------------------------


def test_no_timestamp_lies_beyond_the_duration() -> None:
    words = [Word("hello", 0.5, 0.9), Word("end", 2.9, 3.04)]  # the last frame ends after 3.0 s
    transcript = Transcript("hello end", words, segments_of(words), 3.0, "en")
    body = json.loads(render(transcript, "verbose_json", ["word", "segment"])[0])
    times = [w["end"] for w in body["words"]] + [s["end"] for s in body["segments"]]
    assert max(times) == 3.0 == body["duration"]
    assert "00:00:03,000" in render(transcript, "srt")[0]


def test_avg_logprob_is_the_mean_token_log_probability() -> None:
    # "hello" took five tokens (-1.0 in all), "a" one (-0.4): Whisper's mean over tokens.
    words = [Word("hello", 0.0, 0.5, -1.0, tokens=5), Word("a", 0.6, 0.7, -0.4, tokens=1)]
    segment = json.loads(
        render(Transcript("hello a", words, segments_of(words), 1.0, "en"), "verbose_json")[0]
    )["segments"][0]
    assert segment["avg_logprob"] == pytest.approx(-1.4 / 6, abs=1e-4)


def test_no_speech_prob_is_the_segments_own() -> None:
    words = [Word("hm", 0.0, 0.2)]
    segments = [dataclasses.replace(segments_of(words)[0], no_speech_prob=0.375)]
    body = json.loads(render(Transcript("hm", words, segments, 1.0, "en"), "verbose_json")[0])
    assert body["segments"][0]["no_speech_prob"] == 0.375


def _speech(text: str, seconds_per_word: float = 0.3) -> list[Word]:
    return [
        Word(word, i * seconds_per_word, (i + 0.8) * seconds_per_word)
        for i, word in enumerate(text.split())
    ]


@pytest.mark.parametrize("response_format", ["srt", "vtt"])
@pytest.mark.parametrize("seconds_per_word", [0.3, 1.2], ids=["fast", "slow"])
def test_caption_cues_wrap_at_42_characters_two_lines_seven_seconds(
    response_format: str, seconds_per_word: float
) -> None:
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)  # 72 words, no pause
    words = _speech(text, seconds_per_word)
    transcript = Transcript(text, words, segments_of(words), 90.0, "en")
    body = render(transcript, response_format)[0]
    cues = [block.splitlines() for block in body.strip().split("\n\n")]
    if response_format == "vtt":
        assert cues[0] == ["WEBVTT"]
        cues = cues[1:]
    else:
        cues = [cue[1:] for cue in cues]  # without the number
    assert len(cues) >= 4
    spoken: list[str] = []
    for timing, *lines in cues:
        start, end = (_seconds(t) for t in timing.split(" --> "))
        assert end - start <= formats.CUE_MAX_S
        assert 1 <= len(lines) <= 2
        assert all(len(line) <= 42 for line in lines)
        spoken += " ".join(lines).split()
    assert spoken == text.split()


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_a_pause_starts_a_new_cue_and_short_cues_stay_one_line() -> None:
    words = [Word("hello", 0.0, 0.4), Word("there", 0.5, 0.9), Word("again", 2.0, 2.4)]
    cues = formats.caption_cues(words)
    assert [(c.start, c.end, c.lines) for c in cues] == [
        (0.0, 0.9, ("hello there",)),
        (2.0, 2.4, ("again",)),
    ]


def test_a_word_longer_than_a_line_gets_its_own_line() -> None:
    long = "x" * 50
    cues = formats.caption_cues([Word("a", 0.0, 0.1), Word(long, 0.2, 0.3), Word("b", 0.4, 0.5)])
    assert cues[0].lines == ("a", long) and cues[1].lines == ("b",)
