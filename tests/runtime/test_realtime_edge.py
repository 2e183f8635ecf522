"""The WebSocket edge's session loop with a scripted socket and clock: how a session ends
(idle, maximum duration, draining with its open turn finished, a client that stops reading)."""

from __future__ import annotations

import base64
import json
from collections import deque
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.realtime.decode import PendingDecode
from kubescribe_runtime.realtime.edge import SessionEnded, SessionRunner
from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.realtime.session import DecodeRequest, Session
from kubescribe_runtime.service import State
from prometheus_client import CollectorRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedSocket:
    """Hands out the scripted frames, one per receive; each receive advances the clock."""

    def __init__(self, clock: Clock, frames: list[str], step_s: float = 0.1) -> None:
        self.clock = clock
        self.frames: deque[str] = deque(frames)
        self.step_s = step_s
        self.sent: list[dict[str, Any]] = []
        self.fail_sends = False

    def receive(self, timeout: float | None = None) -> str | None:
        self.clock.now += self.step_s
        return self.frames.popleft() if self.frames else None

    def send(self, text: str) -> None:
        if self.fail_sends:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        self.sent.append(json.loads(text))


class InstantDecoder:
    """Every decode is done at once and hears one word per second of audio."""

    def submit(self, request: DecodeRequest) -> PendingDecode:
        return PendingDecode(request, [])

    def words(self, pending: PendingDecode) -> list[Word]:
        seconds = len(pending.request.samples) / 16000
        return [Word(f"w{i}", i + 0.1, i + 0.5) for i in range(int(seconds))]

    def close(self) -> None:
        pass


def runner(
    frames: list[str], state: State = State.READY, **config: float
) -> tuple[SessionRunner, ScriptedSocket, SimpleNamespace]:
    clock = Clock()
    ws = ScriptedSocket(clock, frames)
    settings = {"session_idle_timeout_s": 5.0, "session_max_duration_s": 100.0} | config
    service = SimpleNamespace(config=SimpleNamespace(**settings), state=state)
    session = Session("s", "demo", ["en"], 16000)
    metrics = RealtimeMetrics(CollectorRegistry())
    return SessionRunner(ws, session, InstantDecoder(), service, metrics, clock), ws, service  # type: ignore[arg-type]


UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
    }
)


def append(seconds: float) -> str:
    pcm = (0.3 * np.sin(np.arange(int(seconds * 24000)) / 5) * 32767).astype("<i2").tobytes()
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    )


def test_an_idle_session_gets_an_error_then_a_normal_close() -> None:
    run, ws, _ = runner([UPDATE], session_idle_timeout_s=2.0)
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.code, ended.value.why) == (1000, "idle")
    assert ws.sent[-1]["error"]["code"] == "session_idle_timeout"


def test_a_session_ends_at_its_maximum_duration_however_busy() -> None:
    run, ws, _ = runner([UPDATE] + [append(0.1)] * 100, session_max_duration_s=3.0)
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.code, ended.value.why) == (1000, "expired")
    assert ws.sent[-1]["error"]["code"] == "session_expired"
    assert ws.clock.now == pytest.approx(3.1, abs=0.11)


def test_draining_commits_the_open_turn_sends_its_transcript_then_closes_1001() -> None:
    run, ws, service = runner([UPDATE, append(2.0), append(1.0)])
    for _ in range(4):  # the frames are taken, the turn is open
        message = ws.receive()
        if message:
            run._receive(message)
    service.state = State.DRAINING
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.code, ended.value.why) == (1001, "draining")
    assert "reconnect" in ended.value.reason
    kinds = [e["type"] for e in ws.sent]
    assert "input_audio_buffer.committed" in kinds
    completed = [e for e in ws.sent if e["type"].endswith("transcription.completed")]
    assert completed and completed[-1]["transcript"] == "w0 w1 w2"


def test_a_client_that_does_not_read_is_dropped_without_a_close_frame() -> None:
    run, ws, _ = runner([UPDATE])
    ws.fail_sends = True
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.why, ended.value.abort) == ("slow_client", True)
