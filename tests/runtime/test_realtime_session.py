"""The session state machine (pure): client frames and decode results in, server events and
decode requests out. Decode results are made up here; the model is not involved."""

from __future__ import annotations

import base64
import functools
import json
import math
from typing import Any

import numpy as np
import pytest
import soxr
from kubescribe_runtime import g711
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime.session import (
    DecodeRequest,
    Output,
    Session,
    SessionLimits,
)
from rt_calls import sentences

RATE = 16000


def session(**limits: Any) -> Session:
    s = Session("s1", "demo", ["en", "de"], RATE, SessionLimits(**limits))
    s.start()
    return s


def update(
    s: Session, fmt: dict[str, Any] | None = None, vad: Any = "manual", **tr: Any
) -> list[Output]:
    audio_input: dict[str, Any] = {"format": fmt or {"type": "audio/pcm", "rate": 24000}}
    if vad != "default":
        audio_input["turn_detection"] = None if vad == "manual" else vad
    if tr:
        audio_input["transcription"] = tr
    raw = {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": audio_input}},
    }
    return s.receive_text(json.dumps(raw))


def pcm24(seconds: float, hz: float = 0.0, amplitude: float = 0.3, seed: int = 0) -> bytes:
    n = int(seconds * 24000)
    if hz:
        wave = amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 24000)
    else:
        wave = 0.003 * np.random.default_rng(seed).standard_normal(n)
    return (wave * 32767).astype("<i2").tobytes()


@functools.cache
def _speech() -> np.ndarray:
    return np.concatenate([s.audio for s in sentences([0, 1, 2])])  # each starts speaking


def voice(seconds: float) -> bytes:
    """``seconds`` of real speech as 24 kHz PCM16: what the server VAD (Silero) hears as speech
    (a tone, which the energy detector took for speech, is no speech to it)."""
    wave = soxr.resample(_speech()[: round(seconds * 16000)], 16000, 24000)
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def append(s: Session, payload: bytes, chunk_s: float = 0.1) -> list[Output]:
    out: list[Output] = []
    step = int(chunk_s * 24000) * 2
    for i in range(0, len(payload), step):
        event = {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(payload[i : i + step]).decode(),
        }
        out += s.receive_text(json.dumps(event))
    return out


ITEM_EVENTS = ("conversation.item.added", "conversation.item.done", "conversation.item.created")


def all_events(out: list[Output]) -> list[dict[str, Any]]:
    return [json.loads(o.render()) for o in out if isinstance(o, ev._Out)]


def events(out: list[Output]) -> list[dict[str, Any]]:
    """The events but the items' lifecycle (checked by the item tests)."""
    return [e for e in all_events(out) if e["type"] not in ITEM_EVENTS]


def kinds(out: list[Output]) -> list[str]:
    return [e["type"] for e in events(out)]


def requests(out: list[Output], kind: str | None = None) -> list[DecodeRequest]:
    return [o for o in out if isinstance(o, DecodeRequest) and kind in (None, o.kind)]


def error_codes(out: list[Output]) -> list[str]:
    return [e["error"]["code"] for e in events(out) if e["type"] == "error"]


def test_session_created_first_then_updated_with_the_served_model() -> None:
    s = Session("s1", "demo", ["en"], RATE)
    (created,) = events(s.start())
    assert created["type"] == "session.created" and created["session"]["type"] == "transcription"
    (updated,) = events(update(s, model="gpt-4o-transcribe", language="en"))
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["model"] == "demo"
    assert updated["event_id"] != created["event_id"]


def test_a_language_the_model_does_not_serve_is_an_error_naming_the_served_ones() -> None:
    s = session()
    (error,) = events(update(s, language="fr"))
    assert error["error"]["code"] == "unsupported_language"
    assert "en, de" in error["error"]["message"]
    assert not s.configured


def test_audio_before_session_update_is_an_error() -> None:
    assert error_codes(append(session(), pcm24(0.1))) == ["session_not_configured"]


def test_manual_commit_decodes_the_whole_buffer_and_completes() -> None:
    s = session(partial_interval_s=0.5)
    update(s)
    out = append(s, pcm24(1.2, hz=300))
    partials = requests(out, "partial")
    assert len(partials) == 1  # one in flight at a time
    assert partials[0].offset_s == 0.0 and 0.5 * RATE <= len(partials[0].samples) <= 0.6 * RATE
    out = s.receive_text('{"type": "input_audio_buffer.commit"}')
    assert kinds(out) == ["input_audio_buffer.committed"]
    (final,) = requests(out, "final")
    assert len(final.samples) == pytest.approx(1.2 * RATE, abs=400)
    done = events(s.decoded(final, [Word("hello", 0.1, 0.5), Word("there", 0.6, 1.0)]))
    assert [e["type"] for e in done] == [
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert done[0]["delta"] == "hello there"
    assert done[1]["transcript"] == "hello there"
    assert done[1]["usage"] == {"type": "duration", "seconds": pytest.approx(1.2, abs=0.03)}
    assert done[1]["item_id"] == final.item_id


def test_partials_become_deltas_and_the_deltas_add_up_to_the_transcript() -> None:
    s = session(partial_interval_s=0.5, partial_window_s=6.0)
    update(s)
    out = append(s, pcm24(3.0, hz=300))
    first = requests(out, "partial")[0]
    deltas = events(s.decoded(first, [Word("one", 0.05, 0.2)]))  # at the edge: not yet
    assert deltas == []
    second = requests(append(s, pcm24(0.5, hz=300)), "partial")[0]
    # The window started at the turn's start: times are relative to its samples.
    out = s.decoded(second, [Word("one", 0.05, 0.2), Word("two", 1.6, 1.9), Word("thr", 2.9, 3.0)])
    (delta,) = events(out)
    assert delta["delta"] == "one two"
    (final,) = requests(s.receive_text('{"type": "input_audio_buffer.commit"}'), "final")
    final_words = [Word("one", 0.05, 0.2), Word("two", 1.6, 1.9), Word("three", 2.9, 3.3)]
    done = events(s.decoded(final, final_words))
    assert [e.get("delta") for e in done] == [" three", None]
    assert delta["delta"] + done[0]["delta"] == done[1]["transcript"] == "one two three"


def test_a_partial_for_a_turn_already_committed_is_dropped() -> None:
    s = session(partial_interval_s=0.5)
    update(s)
    partial = requests(append(s, pcm24(0.6, hz=300)), "partial")[0]
    s.receive_text('{"type": "input_audio_buffer.commit"}')
    assert s.decoded(partial, [Word("late", 0.0, 0.1)]) == []


def test_completed_events_go_out_in_commit_order() -> None:
    s = session()
    update(s)
    finals = []
    for _ in range(2):
        append(s, pcm24(0.5, hz=300))
        finals += requests(s.receive_text('{"type": "input_audio_buffer.commit"}'), "final")
    first, second = finals
    assert s.decoded(second, [Word("second", 0, 0.2)]) == []  # waits for the first
    done = [
        e
        for e in events(s.decoded(first, [Word("first", 0, 0.2)]))
        if e["type"].endswith("completed")
    ]
    assert [e["transcript"] for e in done] == ["first", "second"]
    committed = [e for e in events([]) if e]  # nothing else pending
    assert committed == [] and s.pending_finals == 0


def test_committed_names_the_previous_item() -> None:
    s = session()
    update(s)
    items = []
    for _ in range(2):
        append(s, pcm24(0.3, hz=300))
        (committed,) = events(s.receive_text('{"type": "input_audio_buffer.commit"}'))
        items.append(committed)
    assert items[0]["previous_item_id"] is None
    assert items[1]["previous_item_id"] == items[0]["item_id"]


@pytest.mark.parametrize("audio_s", [0.0, 0.05])
def test_committing_too_little_audio_is_an_error(audio_s: float) -> None:
    s = session()
    update(s)
    if audio_s:
        append(s, pcm24(audio_s, hz=300))
    out = s.receive_text('{"type": "input_audio_buffer.commit", "event_id": "c1"}')
    (error,) = events(out)
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "c1"


def test_clear_drops_the_buffer() -> None:
    s = session()
    update(s)
    append(s, pcm24(0.5, hz=300))
    assert kinds(s.receive_text('{"type": "input_audio_buffer.clear"}')) == [
        "input_audio_buffer.cleared"
    ]
    assert error_codes(s.receive_text('{"type": "input_audio_buffer.commit"}')) == [
        "input_audio_buffer_commit_empty"
    ]


@pytest.mark.parametrize(
    ("audio", "code"),
    [
        ("!!!not-base64", "invalid_base64"),
        (base64.b64encode(b"\x01\x02\x03").decode(), "invalid_audio_length"),
        ("", "empty_audio"),
        (base64.b64encode(bytes(4096)).decode(), "audio_append_too_large"),
    ],
)
def test_bad_appends_are_errors_and_the_session_goes_on(audio: str, code: str) -> None:
    s = session(max_append_bytes=2048)
    update(s)
    out = s.receive_text(
        json.dumps({"type": "input_audio_buffer.append", "audio": audio, "event_id": "a1"})
    )
    (error,) = events(out)
    assert (error["error"]["code"], error["error"]["event_id"]) == (code, "a1")
    append(s, pcm24(0.2, hz=300), chunk_s=0.04)
    assert kinds(s.receive_text('{"type": "input_audio_buffer.commit"}')) == [
        "input_audio_buffer.committed"
    ]


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_g711_audio_is_8_khz_one_byte_a_sample(law: g711.Law) -> None:
    s = session()
    update(s, fmt={"type": f"audio/{law}"})
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    payload = g711.from_float(tone, law)
    s.receive_text(
        json.dumps(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(payload).decode()}
        )
    )
    assert s.audio_seconds == pytest.approx(1.0)
    (final,) = requests(s.receive_text('{"type": "input_audio_buffer.commit"}'), "final")
    assert len(final.samples) == pytest.approx(RATE, abs=200)  # resampled to the model's rate
    spectrum = np.abs(np.fft.rfft(final.samples[2000:14000]))
    assert np.argmax(spectrum) * RATE / 12000 == pytest.approx(440, abs=5)


def test_binary_frames_are_an_error() -> None:
    assert error_codes(session().receive_binary()) == ["binary_frame_not_supported"]


def test_server_vad_opens_and_commits_a_turn_with_padding() -> None:
    s = session(partial_interval_s=0.5)
    update(s, vad={"type": "server_vad", "prefix_padding_ms": 300, "silence_duration_ms": 500})
    out = append(s, pcm24(1.0) + voice(1.0) + pcm24(1.0, seed=1))
    started = next(e for e in events(out) if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events(out) if e["type"] == "input_audio_buffer.speech_stopped")
    # Speech at 1.0 s, less 300 ms; Silero VAD judges 32 ms chunks: two of them of tolerance.
    assert started["audio_start_ms"] == pytest.approx(700, abs=64)
    assert stopped["audio_end_ms"] == pytest.approx(2000, abs=64)
    assert stopped["item_id"] == started["item_id"]
    assert kinds(out).count("input_audio_buffer.committed") == 1
    (final,) = requests(out, "final")
    assert final.offset_s == pytest.approx(0.7, abs=0.04)
    # The turn's audio runs until the silence was long enough to end it.
    assert final.offset_s + len(final.samples) / RATE == pytest.approx(2.5, abs=0.1)


def test_server_vad_sends_nothing_on_quiet_noise() -> None:
    s = session()
    update(s, vad={"type": "server_vad"})
    out = append(s, pcm24(10.0))
    assert kinds(out) == [] and requests(out) == []


def test_a_turn_longer_than_the_maximum_is_cut() -> None:
    s = session(max_turn_s=2.0)
    update(s)
    out = append(s, pcm24(5.0, hz=300))
    finals = requests(out, "final")
    assert [round(len(f.samples) / RATE, 1) for f in finals] == [2.0, 2.0]
    assert kinds(out).count("input_audio_buffer.committed") == 2


def test_drain_commits_the_open_turn() -> None:
    s = session()
    update(s, vad={"type": "server_vad"})
    append(s, pcm24(0.5) + voice(1.0))
    assert s.turn_open
    out = s.drain()
    assert kinds(out) == ["input_audio_buffer.speech_stopped", "input_audio_buffer.committed"]
    (final,) = requests(out, "final")
    done = events(s.decoded(final, [Word("bye", 0.1, 0.4)]))
    assert done[-1]["type"] == "conversation.item.input_audio_transcription.completed"
    assert s.drain() == []


def test_a_partial_does_not_decode_again_what_was_already_emitted() -> None:
    s = session(partial_interval_s=0.5, partial_window_s=6.0)
    update(s)
    first = requests(append(s, pcm24(3.0, hz=300)), "partial")[0]
    s.decoded(first, [])
    second = requests(append(s, pcm24(0.5, hz=300)), "partial")[0]
    assert second.offset_s == 0.0  # nothing emitted yet: the whole (short) turn
    s.decoded(second, [Word("one", 0.2, 0.5), Word("two", 1.0, 1.4)])  # both stable
    third = requests(append(s, pcm24(0.6, hz=300)), "partial")[0]
    # From 1 s before the end of the emitted words, not from the turn's start.
    assert third.offset_s == pytest.approx(0.4, abs=0.01)


# -- the model's blank posteriors as the second VAD signal (issue 13.4) --------------------

VAD = {"type": "server_vad", "prefix_padding_ms": 300, "silence_duration_ms": 500}


def stream_with_partials(s: Session, payload: bytes, heard: list[Word]) -> list[Output]:
    """Stream ``payload`` in 100 ms appends, answering every partial decode at once with the
    words of ``heard`` (stream times) that lie inside its window."""
    out: list[Output] = []
    step = int(0.1 * 24000) * 2
    for i in range(0, len(payload), step):
        queue = append(s, payload[i : i + step])
        while queue:
            item = queue.pop(0)
            out.append(item)
            if isinstance(item, DecodeRequest) and item.kind == "partial":
                end = item.offset_s + len(item.samples) / RATE
                seen = [
                    w.shifted(-item.offset_s)
                    for w in heard
                    if item.offset_s <= w.start and w.end <= end
                ]
                queue += s.decoded(item, seen)
    return out


@pytest.mark.parametrize(
    "heard",
    [[], [Word("uh", 1.2, 1.4, logprob=2 * math.log(0.5), tokens=2)]],
    ids=["all-blank", "unsure-word"],
)
def test_energy_speech_the_model_hears_nothing_in_is_not_committed(heard: list[Word]) -> None:
    # Speech the detector hears for many seconds (a voice in the background, say) that the
    # model decodes as blank (or as a word it gives little probability, as it does on noise
    # alone): the turn is closed uncommitted, and no new turn opens while that sound goes on.
    s = session(partial_interval_s=0.5)
    update(s, vad=VAD)
    out = stream_with_partials(s, pcm24(1.0) + voice(5.0), heard)
    assert kinds(out) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
    ]
    assert requests(out, "final") == []
    stopped = next(e for e in events(out) if e["type"] == "input_audio_buffer.speech_stopped")
    # Decided once the model saw 1 s of the "speech" (and 300 ms of lookahead) as blank.
    assert 2000 <= stopped["audio_end_ms"] <= 3000
    assert not s.turn_open


def test_the_model_ends_a_turn_whose_tail_it_hears_as_blank() -> None:
    # Words until 2.0 s, then the sound goes on (what the detector takes for speech, the model
    # not): the turn ends at the last word once the model heard silence_duration_ms of blank.
    s = session(partial_interval_s=0.5)
    update(s, vad=VAD)
    heard = [Word("hello", 1.1, 1.5), Word("there", 1.6, 2.0)]
    out = stream_with_partials(s, pcm24(1.0) + voice(5.0), heard)
    assert kinds(out).count("input_audio_buffer.speech_started") == 1
    stopped = next(e for e in events(out) if e["type"] == "input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] == 2000
    assert kinds(out).count("input_audio_buffer.committed") == 1
    (final,) = requests(out, "final")
    end_s = final.offset_s + len(final.samples) / RATE
    assert 2.8 <= end_s <= 3.4  # 500 ms of blank past the word, 300 ms of lookahead, cadence
    assert not s.turn_open


def test_a_turn_the_model_heard_words_in_is_committed_at_the_energy_stop() -> None:
    # The speech stops: the detector ends the turn first, as before.
    s = session(partial_interval_s=0.5)
    update(s, vad=VAD)
    heard = [Word("hello", 1.1, 1.5), Word("there", 1.6, 1.9)]
    out = stream_with_partials(s, pcm24(1.0) + voice(1.0) + pcm24(1.0, seed=1), heard)
    stopped = next(e for e in events(out) if e["type"] == "input_audio_buffer.speech_stopped")
    assert stopped["audio_end_ms"] == pytest.approx(2000, abs=64)
    assert kinds(out).count("input_audio_buffer.committed") == 1


# -- items, as OpenAI's clients expect them -------------------------------------------------

ADDED, DONE, CREATED = ITEM_EVENTS
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
COMMIT = '{"type": "input_audio_buffer.commit"}'


def partial_with_a_delta(s: Session) -> list[dict[str, Any]]:
    """3.5 s of a turn, then a partial that makes "one two" stable: its events."""
    s.decoded(requests(append(s, pcm24(3.0, hz=300)), "partial")[0], [])
    partial = requests(append(s, pcm24(0.5, hz=300)), "partial")[0]
    return all_events(s.decoded(partial, [Word("one", 0.05, 0.2), Word("two", 1.0, 1.4)]))


def test_an_item_is_announced_before_its_first_delta_and_done_at_its_commit() -> None:
    s = session(partial_interval_s=0.5)
    update(s)
    before = partial_with_a_delta(s)
    assert [e["type"] for e in before] == [ADDED, DELTA]
    added, delta = before
    assert added["item"]["id"] == delta["item_id"]
    assert (added["item"]["status"], added["item"]["role"]) == ("in_progress", "user")
    out = s.receive_text(COMMIT)
    assert [e["type"] for e in all_events(out)] == ["input_audio_buffer.committed", DONE]
    (final,) = requests(out, "final")
    done = all_events(s.decoded(final, [Word("one", 0.05, 0.2), Word("two", 1.0, 1.4)]))
    assert [e["type"] for e in done] == [COMPLETED]  # announced once only


def test_an_item_without_partials_is_announced_at_its_commit() -> None:
    s = session(partial_interval_s=5.0)
    update(s)
    append(s, pcm24(1.0, hz=300))
    out = all_events(s.receive_text(COMMIT))
    assert [e["type"] for e in out] == ["input_audio_buffer.committed", ADDED, DONE]
    assert out[1]["item"]["status"] == "completed"
    assert out[1]["previous_item_id"] is None
    append(s, pcm24(1.0, hz=300))
    second = all_events(s.receive_text(COMMIT))
    assert second[1]["previous_item_id"] == out[0]["item_id"]


def test_a_beta_session_announces_items_with_conversation_item_created() -> None:
    s = session(partial_interval_s=0.5)
    beta = {"type": "transcription_session.update", "session": {"turn_detection": None}}
    (updated,) = all_events(s.receive_text(json.dumps(beta)))
    assert updated["type"] == "transcription_session.updated"
    assert [e["type"] for e in partial_with_a_delta(s)] == [CREATED, DELTA]
    assert [e["type"] for e in all_events(s.receive_text(COMMIT))] == [
        "input_audio_buffer.committed"
    ]


def test_clear_during_a_turn_with_deltas_fails_its_item() -> None:
    s = session(partial_interval_s=0.5)
    update(s)
    (added, _) = partial_with_a_delta(s)
    out = all_events(s.receive_text('{"type": "input_audio_buffer.clear"}'))
    assert [e["type"] for e in out] == [
        "input_audio_buffer.cleared",
        "conversation.item.input_audio_transcription.failed",
    ]
    assert out[1]["item_id"] == added["item"]["id"]
    assert out[1]["error"]["code"] == "input_audio_buffer_cleared"
    assert not s.turn_open


def test_clear_of_a_turn_nobody_was_told_of_sends_only_cleared() -> None:
    s = session(partial_interval_s=5.0)
    update(s)
    append(s, pcm24(1.0, hz=300))
    out = all_events(s.receive_text('{"type": "input_audio_buffer.clear"}'))
    assert [e["type"] for e in out] == ["input_audio_buffer.cleared"]


def test_logprobs_come_with_deltas_and_transcripts_when_included() -> None:
    s = session(partial_interval_s=0.5)
    raw = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {"turn_detection": None}},
            "include": ["item.input_audio_transcription.logprobs"],
        },
    }
    s.receive_text(json.dumps(raw))
    s.decoded(requests(append(s, pcm24(3.0, hz=300)), "partial")[0], [])
    partial = requests(append(s, pcm24(0.5, hz=300)), "partial")[0]
    words = [Word("one", 0.05, 0.2, logprob=-0.5, tokens=2), Word("two", 1.0, 1.4, logprob=-0.1)]
    (delta,) = events(s.decoded(partial, words))
    assert delta["logprobs"] == [
        {"token": "one", "bytes": list(b"one"), "logprob": -0.5},
        {"token": " two", "bytes": list(b" two"), "logprob": -0.1},
    ]
    assert "".join(p["token"] for p in delta["logprobs"]) == delta["delta"]
    (final,) = requests(s.receive_text(COMMIT), "final")
    three = Word("three", 2.0, 2.4, logprob=-2.0)
    done = events(s.decoded(final, [*words, three]))
    assert [p["token"] for p in done[0]["logprobs"]] == [" three"]
    assert [p["logprob"] for p in done[1]["logprobs"]] == [-0.5, -0.1, -2.0]


def test_without_the_include_there_are_no_logprobs() -> None:
    s = session(partial_interval_s=0.5)
    update(s)
    (_, delta) = partial_with_a_delta(s)
    assert delta["logprobs"] is None


def test_server_vad_idle_timeout_commits_the_quiet_audio() -> None:
    s = session()
    update(s, vad={"type": "server_vad", "idle_timeout_ms": 2000})
    out = append(s, pcm24(2.5))  # quiet line noise: no speech
    kinds_ = [e["type"] for e in all_events(out)]
    assert kinds_[:2] == ["input_audio_buffer.timeout_triggered", "input_audio_buffer.committed"]
    (triggered,) = [e for e in all_events(out) if e["type"].endswith("timeout_triggered")]
    assert triggered["audio_start_ms"] == 0
    assert triggered["audio_end_ms"] == pytest.approx(2000, abs=100)
    (final,) = requests(out, "final")
    assert final.item_id == triggered["item_id"]
    assert kinds_.count("input_audio_buffer.timeout_triggered") == 1  # once per idle period
