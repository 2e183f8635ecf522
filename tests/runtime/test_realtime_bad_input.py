"""Bad realtime clients never hurt the server or another session (issue 13.7): each malformed
behaviour gets an ``error`` event (the session goes on) or a clean close; after all of them, and
beside a client that never reads, a normal session still transcribes correctly."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests
from rt_calls import ROOT, sentences
from rt_realtime import (
    DeafClient,
    pcm24,
    raw_connect,
    recv_json,
    session_config,
    stream_with_official_client,
)
from rt_server import ServerProcess, metric, running
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from bench.common import word_error_rate

pytestmark = pytest.mark.xdist_group("runtime-server")

MAX_APPEND_KB = 16


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        ROOT / "examples" / "models" / "demo", tmp_path_factory.mktemp("logs"),
        "--max-append-kb", str(MAX_APPEND_KB), "--max-sessions", "6",
        "--session-idle-timeout", "20",
    ) as process:  # fmt: skip
        yield process


def update(**overrides: Any) -> str:
    session = session_config()
    session.update(overrides)
    return json.dumps({"type": "session.update", "session": session})


def update_input(**fields: Any) -> str:
    session = session_config()
    session["audio"]["input"].update(fields)
    return json.dumps({"type": "session.update", "session": session})


def append(payload: bytes | str, event_id: str = "a1") -> str:
    audio = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio, "event_id": event_id})


SPEECH = pcm24(sentences([4])[0].audio)


def configured(url: str) -> ClientConnection:
    ws = raw_connect(url)
    assert recv_json(ws)["type"] == "session.created"
    ws.send(update())
    assert recv_json(ws)["type"] == "session.updated"
    return ws


def expect_error(*frames: str | bytes, code: str, configure: bool = True) -> Callable[[str], None]:
    """Send ``frames`` (after ``session.update`` when ``configure``): the last gets an ``error``
    event with ``code``, and the session still answers afterwards."""

    def run(url: str) -> None:
        if configure:
            ws = configured(url)
        else:
            ws = raw_connect(url)
            recv_json(ws)
        with ws:
            for frame in frames:
                ws.send(frame)
            event = recv_json(ws)
            assert event["type"] == "error", event
            assert event["error"]["code"] == code, event
            ws.send('{"type": "input_audio_buffer.clear"}')  # still served
            assert recv_json(ws)["type"] == "input_audio_buffer.cleared"

    return run


def expect_close(frame: str | bytes, close_code: int) -> Callable[[str], None]:
    def run(url: str) -> None:
        with configured(url) as ws:
            ws.send(frame)
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == close_code

    return run


def refused_upgrade(query: str, status: int) -> Callable[[str], None]:
    def run(url: str) -> None:
        with pytest.raises(InvalidStatus) as refused:
            raw_connect(url, query)
        assert refused.value.response.status_code == status

    return run


def disconnect_mid_turn(url: str) -> None:
    ws = configured(url)
    for offset in range(0, len(SPEECH) // 2, 4800):
        ws.send(append(SPEECH[offset : offset + 4800]))
    ws.socket.close()  # no close frame, mid-speech, decodes under way


def flood_faster_than_real_time(url: str) -> None:
    with configured(url) as ws:
        for offset in range(0, len(SPEECH), 4800):  # the whole sentence at once
            ws.send(append(SPEECH[offset : offset + 4800]))
        ws.send('{"type": "input_audio_buffer.commit", "event_id": "c1"}')
        events: list[dict[str, Any]] = []
        while (
            not events
            or events[-1]["type"] != "conversation.item.input_audio_transcription.completed"
        ):
            events.append(recv_json(ws, timeout=30))
        assert events[-1]["transcript"]


BEHAVIOURS: list[tuple[str, Callable[[str], None]]] = [
    ("text that is not JSON", expect_error("hello", code="invalid_json")),
    ("a JSON array", expect_error("[1, 2]", code="invalid_event")),
    ("no type", expect_error('{"event_id": "x"}', code="missing_event_type")),
    (
        "an unknown type",
        expect_error('{"type": "input_audio_buffer.explode"}', code="unknown_event_type"),
    ),
    (
        "a conversation event",
        expect_error('{"type": "response.create"}', code="unknown_event_type"),
    ),
    ("JSON nested too deep", expect_error("[" * 50_000, code="invalid_json")),
    (
        "trailing garbage",
        expect_error('{"type": "input_audio_buffer.commit"} x', code="invalid_json"),
    ),
    (
        "a realtime (speech-to-speech) session",
        expect_error(update(type="realtime"), code="unsupported_session_type"),
    ),
    (
        "an unsupported audio format",
        expect_error(update_input(format={"type": "audio/opus"}), code="invalid_value"),
    ),
    (
        "PCM at 16 kHz",
        expect_error(
            update_input(format={"type": "audio/pcm", "rate": 16000}), code="invalid_value"
        ),
    ),
    (
        "a language not served",
        expect_error(update_input(transcription={"language": "fr"}), code="unsupported_language"),
    ),
    (
        "a turn detection that does not exist",
        expect_error(update_input(turn_detection={"type": "push_to_talk"}), code="invalid_value"),
    ),
    (
        "a VAD threshold above 1",
        expect_error(
            update_input(turn_detection={"type": "server_vad", "threshold": 3}),
            code="invalid_value",
        ),
    ),
    (
        "audio before session.update",
        expect_error(append(SPEECH[:4800]), code="session_not_configured", configure=False),
    ),
    ("bad base64", expect_error(append("@@not base64@@"), code="invalid_base64")),
    ("an odd byte count", expect_error(append(b"\x00\x01\x02"), code="invalid_audio_length")),
    ("an empty append", expect_error(append(""), code="empty_audio")),
    (
        "audio that is not a string",
        expect_error('{"type": "input_audio_buffer.append", "audio": 7}', code="invalid_value"),
    ),
    (
        "an oversized append",
        expect_error(append(bytes(MAX_APPEND_KB * 1024 + 2)), code="audio_append_too_large"),
    ),
    ("a binary frame", expect_error(b"\x00\x01binary", code="binary_frame_not_supported")),
    (
        "a commit with no audio",
        expect_error(
            '{"type": "input_audio_buffer.commit"}', code="input_audio_buffer_commit_empty"
        ),
    ),
    ("a frame far over the limit", expect_close("x" * (4 * MAX_APPEND_KB * 1024 + 200_000), 1009)),
    ("no intent", refused_upgrade("", 400)),
    ("another intent", refused_upgrade("?intent=conversation", 400)),
    ("a disconnect mid-turn", disconnect_mid_turn),
    ("audio far faster than real time", flood_faster_than_real_time),
]


def test_every_bad_behaviour_is_answered_and_a_normal_session_still_transcribes(
    server: ServerProcess,
) -> None:
    assert len(BEHAVIOURS) >= 20
    # A client that never reads, open the whole time: it asks for an error event a hundred
    # thousand times and reads none, until the server's sends back up; the server ends it.
    deaf = DeafClient(server.url, '{"type": "nonsense"}', 100_000)
    try:
        for name, behaviour in BEHAVIOURS:
            try:
                behaviour(server.url)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 200, name
        (sentence,) = sentences([4])
        audio = np.concatenate(
            [np.zeros(8000, np.float32), sentence.audio, np.zeros(16000, np.float32)]
        )
        got = stream_with_official_client(server.url, pcm24(audio))
        (completed,) = got.of("conversation.item.input_audio_transcription.completed")
        assert word_error_rate([sentence.text], [completed.transcript]) <= 0.2
        assert got.of("error") == []
        deadline = time.monotonic() + 60
        while metric(server, 'kubescribe_realtime_sessions_total{reason="slow_client"}') < 1:
            assert time.monotonic() < deadline, (
                "the client that never reads was not ended:\n" + server.log()[-3000:]
            )
            time.sleep(0.5)
    finally:
        deaf.close()
    assert server.process.poll() is None
    deadline = time.monotonic() + 10
    while True:
        text = requests.get(server.url + "/metrics", timeout=10).text
        if "kubescribe_realtime_sessions_active 0.0" in text:
            break
        assert time.monotonic() < deadline, "sessions still counted as open"
        time.sleep(0.2)
