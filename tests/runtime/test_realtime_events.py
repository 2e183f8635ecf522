"""Realtime protocol events: client events parse as OpenAI's GA (and beta) shapes, malformed ones
become specific errors, and every server event validates against the official client's types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime import session_config as sc
from openai.types.beta.realtime import (
    ConversationItemCreatedEvent,
    TranscriptionSessionUpdatedEvent,
)
from openai.types.realtime import (
    ConversationItemAdded,
    ConversationItemDone,
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    ConversationItemInputAudioTranscriptionFailedEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    InputAudioBufferTimeoutTriggered,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from openai.types.realtime.realtime_transcription_session_create_request import (
    RealtimeTranscriptionSessionCreateRequest,
)

GA_UPDATE: dict[str, Any] = {
    "type": "session.update",
    "event_id": "evt_1",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 700,
                },
            }
        },
    },
}


def test_ga_session_update_sets_every_field() -> None:
    event = ev.parse_client_event(json.dumps(GA_UPDATE))
    assert isinstance(event, ev.SessionUpdate)
    config = sc.SessionConfig(model="demo").updated(event)
    assert config == sc.SessionConfig(
        format="pcmu",
        model="gpt-4o-transcribe",
        language="en",
        turn_detection=sc.ServerVad(0.6, 200, 700),
    )


def test_only_fields_present_change_and_null_turn_detection_means_manual_commits() -> None:
    start = sc.SessionConfig(format="pcma", model="demo", language="en")
    update = {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
    }
    config = start.updated(ev.parse_client_event(json.dumps(update)))  # type: ignore[arg-type]
    assert config == sc.SessionConfig(
        format="pcma", model="demo", language="en", turn_detection=None
    )
    untouched = {"type": "session.update", "session": {"type": "transcription"}}
    assert config.updated(ev.parse_client_event(json.dumps(untouched))) == config  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("beta_format", "expected"), [("pcm16", "pcm16"), ("g711_ulaw", "pcmu"), ("g711_alaw", "pcma")]
)
def test_beta_transcription_session_update(beta_format: str, expected: str) -> None:
    raw = {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": beta_format,
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": None,
        },
    }
    event = ev.parse_client_event(json.dumps(raw))
    assert isinstance(event, ev.TranscriptionSessionUpdate)
    config = sc.SessionConfig().updated(event)
    assert (config.format, config.language, config.turn_detection) == (expected, "en", None)


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1, 2]", "invalid_event", None),
        ('{"event_id": "e"}', "missing_event_type", "type"),
        ('{"type": "response.create"}', "unknown_event_type", "type"),
        ('{"type": "input_audio_buffer.append"}', "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_value", "audio"),
        (
            '{"type": "session.update", "session": {"type": "realtime"}}',
            "unsupported_session_type",
            "session.type",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input":'
            ' {"format": {"type": "audio/pcm", "rate": 16000}}}}}',
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input":'
            ' {"format": {"type": "audio/opus"}}}}}',
            "invalid_value",
            "session.audio.input.format.type",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input":'
            ' {"turn_detection": {"type": "server_vad", "threshold": 2}}}}}',
            "invalid_value",
            "session.audio.input.turn_detection.threshold",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input":'
            ' {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}}}}',
            "invalid_value",
            "session.audio.input.turn_detection.eagerness",
        ),
        (
            '{"type": "session.update", "session": {"type": "transcription", "audio": {"input":'
            ' {"turn_detection": {"type": "push_to_talk"}}}}}',
            "invalid_value",
            "session.audio.input.turn_detection.type",
        ),
    ],
)
def test_malformed_client_events_are_specific_errors(
    text: str, code: str, param: str | None
) -> None:
    with pytest.raises(ev.ProtocolError) as raised:
        ev.parse_client_event(text)
    assert (raised.value.code, raised.value.param) == (code, param)


def test_an_error_names_the_offending_event_id() -> None:
    with pytest.raises(ev.ProtocolError) as raised:
        ev.parse_client_event('{"type": "nope", "event_id": "client-7"}')
    error = json.loads(ev.Error.of(raised.value).render())
    assert error["error"]["event_id"] == "client-7"
    RealtimeErrorEvent.model_validate(error)


SERVER_EVENTS = [
    (
        ev.SpeechStarted(event_id="e", audio_start_ms=120, item_id="i"),
        InputAudioBufferSpeechStartedEvent,
    ),
    (
        ev.SpeechStopped(event_id="e", audio_end_ms=900, item_id="i"),
        InputAudioBufferSpeechStoppedEvent,
    ),
    (
        ev.Committed(event_id="e", item_id="i", previous_item_id=None),
        InputAudioBufferCommittedEvent,
    ),
    (ev.Cleared(event_id="e"), InputAudioBufferClearedEvent),
    (
        ev.TranscriptDelta(event_id="e", item_id="i", delta=" word"),
        ConversationItemInputAudioTranscriptionDeltaEvent,
    ),
    (
        ev.TranscriptCompleted(
            event_id="e", item_id="i", transcript="a b", usage=ev.DurationUsage(seconds=1.5)
        ),
        ConversationItemInputAudioTranscriptionCompletedEvent,
    ),
    (
        ev.TranscriptFailed(
            event_id="e",
            item_id="i",
            error=ev.FailedError(type="server_error", code="c", message="m"),
        ),
        ConversationItemInputAudioTranscriptionFailedEvent,
    ),
    (
        ev.TranscriptDelta(
            event_id="e", item_id="i", delta=" été", logprobs=[ev.LogProb.of(" été", -0.25)]
        ),
        ConversationItemInputAudioTranscriptionDeltaEvent,
    ),
    (
        ev.TranscriptCompleted(
            event_id="e",
            item_id="i",
            transcript="a",
            usage=ev.DurationUsage(seconds=1.5),
            logprobs=[ev.LogProb.of("a", -0.1)],
        ),
        ConversationItemInputAudioTranscriptionCompletedEvent,
    ),
    (
        ev.TimeoutTriggered(event_id="e", audio_start_ms=0, audio_end_ms=5000, item_id="i"),
        InputAudioBufferTimeoutTriggered,
    ),
    (
        ev.ItemEvent.of("conversation.item.added", "i", None, "in_progress", None),
        ConversationItemAdded,
    ),
    (
        ev.ItemEvent.of("conversation.item.done", "i", "h", "completed", None),
        ConversationItemDone,
    ),
    (
        ev.ItemEvent.of("conversation.item.created", "i", "h", "completed", None),
        ConversationItemCreatedEvent,
    ),
]


@pytest.mark.parametrize(("event", "official"), SERVER_EVENTS)
def test_server_events_validate_against_the_official_types(event: Any, official: Any) -> None:
    parsed = official.model_validate(json.loads(event.render()))
    assert parsed.type == event.type


def test_a_logprob_is_the_word_as_utf8_bytes() -> None:
    logprob = json.loads(ev.LogProb.of(" été", -0.25).model_dump_json())
    assert logprob == {"token": " été", "bytes": list(" été".encode()), "logprob": -0.25}


@pytest.mark.parametrize("fmt", ["pcm16", "pcmu", "pcma"])
@pytest.mark.parametrize(
    "vad",
    [sc.ServerVad(), sc.ServerVad(idle_timeout_ms=6000), sc.ServerVad(eagerness="high"), None],
)
def test_session_objects_validate_against_the_official_types(
    fmt: sc.InputFormat, vad: sc.ServerVad | None
) -> None:
    config = sc.SessionConfig(format=fmt, model="demo", language="en", turn_detection=vad)
    session = sc.session_object("s1", config)
    parsed = RealtimeTranscriptionSessionCreateRequest.model_validate(session)
    assert parsed.audio and parsed.audio.input and parsed.audio.input.format
    assert (
        parsed.audio.input.format.type
        == {"pcm16": "audio/pcm", "pcmu": "audio/pcmu", "pcma": "audio/pcma"}[fmt]
    )
    assert (parsed.audio.input.turn_detection is None) == (vad is None)
    SessionCreatedEvent.model_validate(
        json.loads(ev.SessionCreated(event_id="e", session=session).render())
    )
    SessionUpdatedEvent.model_validate(
        json.loads(ev.SessionUpdated(event_id="e", session=session).render())
    )


@pytest.mark.parametrize("model", ["demo", "whisper-1"])
@pytest.mark.parametrize("vad", [sc.ServerVad(), sc.ServerVad(eagerness="low"), None])
def test_the_beta_session_validates_against_the_official_type(
    model: str, vad: sc.ServerVad | None
) -> None:
    config = sc.SessionConfig(model=model, turn_detection=vad, include=(sc.LOGPROBS,))
    session = sc.session_object("s1", config, beta=True)
    event = ev.SessionUpdated(event_id="e", type="transcription_session.updated", session=session)
    parsed = TranscriptionSessionUpdatedEvent.model_validate(json.loads(event.render()))
    transcription = parsed.session.input_audio_transcription
    assert transcription is not None
    # A model name outside the beta type's literals is shown as null there.
    assert transcription.model == (model if model == "whisper-1" else None)


@pytest.mark.parametrize(
    ("eagerness", "silence_ms"), [("low", 1200), ("medium", 700), ("auto", 700), ("high", 350)]
)
def test_semantic_vad_is_accepted_as_server_vad_with_a_silence_by_eagerness(
    eagerness: str, silence_ms: int
) -> None:
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {
                "input": {"turn_detection": {"type": "semantic_vad", "eagerness": eagerness}}
            },
        },
    }
    event = ev.parse_client_event(json.dumps(update))
    assert isinstance(event, ev.SessionUpdate)
    vad = sc.SessionConfig().updated(event).turn_detection
    assert vad == sc.ServerVad(silence_duration_ms=silence_ms, eagerness=eagerness)
    shown = sc.session_object("s", sc.SessionConfig(turn_detection=vad))
    assert shown["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": eagerness,
    }


def test_includes_this_server_cannot_give_are_left_out() -> None:
    update = {
        "type": "session.update",
        "session": {"type": "transcription", "include": [sc.LOGPROBS, "item.something_else"]},
    }
    event = ev.parse_client_event(json.dumps(update))
    assert isinstance(event, ev.SessionUpdate)
    assert sc.SessionConfig().updated(event).include == (sc.LOGPROBS,)


def test_an_unknown_event_type_is_not_echoed_at_length() -> None:
    with pytest.raises(ev.ProtocolError) as raised:
        ev.parse_client_event(json.dumps({"type": "x" * 100_000}))
    assert raised.value.code == "unknown_event_type"
    assert len(raised.value.message) < 400
