"""The WebSocket edge's session loop with a scripted socket, clock and decode futures: how a
session ends (idle, never configured, maximum duration, draining with its open turn finished, a
client that stops reading), no final lost whatever the timing of its decode, and the audio
backlog bound (an error, then a close if the client goes on)."""

from __future__ import annotations

import base64
import concurrent.futures
import json
from collections import deque
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.realtime.decode import PendingDecode
from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.realtime.runner import SessionEnded, SessionRunner
from kubescribe_runtime.realtime.session import DecodeRequest, Session, SessionLimits
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


@dataclass
class HeldDecode(PendingDecode):
    future: concurrent.futures.Future[None] | None = None

    def done(self) -> bool:
        return self.future is not None and self.future.done()


class HeldDecoder(InstantDecoder):
    """Every decode waits for its future, which the test completes."""

    def __init__(self) -> None:
        self.futures: list[concurrent.futures.Future[None]] = []

    def submit(self, request: DecodeRequest) -> PendingDecode:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.futures.append(future)
        return HeldDecode(request, [], future)

    def finish_all(self) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(None)


@dataclass
class FinishesRightAfterFirstLook(PendingDecode):
    """A decode the batcher finishes just after the loop first asked whether it was done: the
    interleaving that lost finals when the loop looked twice."""

    looks: int = 0

    def done(self) -> bool:
        self.looks += 1
        return self.looks > 1


def runner(
    frames: list[str],
    state: State = State.READY,
    decoder: Any = None,
    limits: SessionLimits | None = None,
    **config: float,
) -> tuple[SessionRunner, ScriptedSocket, SimpleNamespace]:
    clock = Clock()
    ws = ScriptedSocket(clock, frames)
    settings = {
        "session_idle_timeout_s": 5.0,
        "session_max_duration_s": 100.0,
        "session_configure_timeout_s": 10.0,
        "session_max_backlog_seconds": 60.0,
    } | config
    service = SimpleNamespace(config=SimpleNamespace(**settings), state=state)
    session = Session("s", "demo", ["en"], 16000, limits)
    metrics = RealtimeMetrics(CollectorRegistry())
    run = SessionRunner(
        ws,
        session,
        decoder or InstantDecoder(),
        service,  # type: ignore[arg-type]
        metrics,
        clock,
    )
    return run, ws, service


UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
    }
)
COMMIT = json.dumps({"type": "input_audio_buffer.commit"})
COMPLETED = "conversation.item.input_audio_transcription.completed"


def of(ws: ScriptedSocket, kind: str) -> list[dict[str, Any]]:
    return [e for e in ws.sent if e["type"] == kind]


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


def test_a_session_that_never_configures_itself_is_closed_at_the_deadline() -> None:
    run, ws, _ = runner([], session_configure_timeout_s=2.0)
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.code, ended.value.why) == (1000, "unconfigured")
    assert ws.sent[-1]["error"]["code"] == "session_not_configured"
    assert ws.clock.now == pytest.approx(2.1, abs=0.11)


def test_a_configured_session_is_not_held_to_the_configure_deadline() -> None:
    run, ws, _ = runner([UPDATE] + [append(0.1)] * 40, session_configure_timeout_s=1.0)
    run.start()
    for _ in range(41):
        run.step()
    assert not [e for e in ws.sent if e["type"] == "error"]


def test_a_final_finished_between_two_looks_is_delivered_and_later_ones_follow() -> None:
    """Three turns committed, their decodes pending; the second turn's final finishes just
    after the loop first asks whether it is done (forced by the decode itself, not by load)
    while the others are done: every ``completed`` still goes out, in commit order, and the
    drain ends at once."""
    decoder = HeldDecoder()
    run, ws, service = runner([], decoder=decoder)
    run.start()
    for frame in [UPDATE] + [append(1.0), COMMIT] * 3:
        run._receive(frame)
    finals = [i for i, p in enumerate(run.pending) if p.request.kind == "final"]
    assert len(finals) == 3
    racing = finals[1]
    run.pending[racing] = FinishesRightAfterFirstLook(run.pending[racing].request, [])
    decoder.finish_all()
    run._collect()  # the first final goes out; the second is seen not done yet
    run._collect()  # the second is done now: it and the third go out
    completed = of(ws, COMPLETED)
    committed = of(ws, "input_audio_buffer.committed")
    assert [c["item_id"] for c in completed] == [c["item_id"] for c in committed]
    assert len(completed) == 3
    assert not run.pending and not run.session.pending_finals
    service.state = State.DRAINING
    with pytest.raises(SessionEnded) as ended:
        run.step()
    assert ended.value.why == "draining"


def test_a_drain_with_finals_pending_sends_them_then_closes() -> None:
    decoder = HeldDecoder()
    frames = [UPDATE] + [append(1.0), COMMIT] * 2 + [append(1.5)]
    run, ws, service = runner(frames, decoder=decoder)
    run.start()
    for _ in range(len(frames)):
        run.step()
    service.state = State.DRAINING
    run.step()  # the open turn is committed: three finals wait
    assert len(of(ws, "input_audio_buffer.committed")) == 3 and not of(ws, COMPLETED)
    decoder.finish_all()
    with pytest.raises(SessionEnded) as ended:
        for _ in range(3):
            run.step()
    assert ended.value.why == "draining"
    assert len(of(ws, COMPLETED)) == 3


def test_past_the_backlog_the_client_is_told_once_and_every_commit_still_completes() -> None:
    decoder = HeldDecoder()
    frames = [UPDATE] + [append(1.0)] * 7
    run, ws, _ = runner(
        frames,
        decoder=decoder,
        limits=SessionLimits(max_turn_s=2.0),
        session_max_backlog_seconds=5.0,
    )
    run.start()
    while ws.frames:  # the decodes lag: 7 s held, over the bound, under 1.5 times it
        run.step()
    run.step()
    assert 5.0 < run.backlog_s <= 7.5
    (error,) = of(ws, "error")  # told once, and every frame was read
    assert error["error"]["code"] == "input_audio_buffer_backlog"
    decoder.finish_all()
    run.step()
    assert run.backlog_s <= 5.0 and not run.warned
    committed = of(ws, "input_audio_buffer.committed")
    assert len(committed) == 3 and len(of(ws, COMPLETED)) == 3


def test_a_client_that_goes_on_past_the_backlog_is_closed() -> None:
    run, ws, _ = runner(
        [UPDATE] + [append(1.0)] * 20,
        decoder=HeldDecoder(),
        limits=SessionLimits(max_turn_s=2.0),
        session_max_backlog_seconds=5.0,
    )
    with pytest.raises(SessionEnded) as ended:
        run.run()
    assert (ended.value.code, ended.value.why) == (1008, "backlog")
    codes = [e["error"]["code"] for e in of(ws, "error")]
    assert codes == ["input_audio_buffer_backlog"] * 2
    assert "closing" in of(ws, "error")[-1]["error"]["message"]
    assert 7.5 < run.backlog_s <= 8.6  # closed at the first append past 1.5 times the bound


def test_a_backlog_no_decode_can_bring_down_ends_the_session() -> None:
    """An open turn longer than the backlog (only a server with a backlog under its
    --max-turn-seconds, which the settings refuse, could get there)."""
    decoder = HeldDecoder()
    run, ws, _ = runner(
        [UPDATE] + [append(1.0)] * 10,
        decoder=decoder,
        limits=SessionLimits(max_turn_s=30.0),
        session_max_backlog_seconds=5.0,
    )
    run.start()
    with pytest.raises(SessionEnded) as ended:
        for _ in range(100):
            run.step()
            decoder.finish_all()  # the partials finish; only the open turn holds audio
    assert (ended.value.code, ended.value.why) == (1008, "backlog")
    assert ws.sent[-1]["error"]["code"] == "input_audio_buffer_backlog"
