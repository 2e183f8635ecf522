"""Clients that send faster than real time, against the real server with the demo model: every
commit still gets its item, its deltas and its transcript, in order, each event valid under the
official client's strict types; past the backlog the client is told once and pushed back by
TCP; and the memory the sessions took is given back when they end (issue 20.1, 20.3, 20.6).
Beside them, what a client meets at the edges: logprobs when asked for, the configure deadline."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from rt_calls import ROOT, sentences
from rt_realtime import pcm24, raw_connect, recv_json
from rt_server import ServerProcess, metric, running, start_server
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.xdist_group("runtime-server")

DEMO = ROOT / "examples" / "models" / "demo"
SR = 16000
FLOOD_S = 40.0
COMMIT_EVERY_S = 2.0
BACKLOG_S = 60.0  # more than a flood holds: every commit goes through
SMALL_BACKLOG_S = 6.0
OFFICIAL = TypeAdapter(RealtimeServerEvent)
COMMITTED = "input_audio_buffer.committed"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        DEMO, tmp_path_factory.mktemp("logs"),
        "--max-sessions", "4", "--max-turn-seconds", "5",
        "--session-max-backlog-seconds", str(BACKLOG_S), "--session-configure-timeout", "2",
    ) as process:  # fmt: skip
        yield process
    assert " ERROR " not in process.log() and "Traceback" not in process.log()


def speech(seconds: float) -> bytes:
    """Test-set sentences back to back, ``seconds`` long, as the protocol's audio/pcm."""
    parts, total, index = [], 0, 0
    while total < seconds * SR:
        (sentence,) = sentences([index % 20])
        parts.append(sentence.audio)
        total += len(sentence.audio)
        index += 1
    return pcm24(np.concatenate(parts)[: int(seconds * SR)].astype(np.float32))


def flood(base_url: str, seconds: float) -> tuple[list[dict[str, Any]], int]:
    """One session sending ``seconds`` of speech as fast as TCP takes it, committed every
    COMMIT_EVERY_S of audio (manual turns); every server event until the last commit's
    ``completed`` (each validated by the official types), and the commits sent."""
    audio = speech(seconds)
    step = int(48000 * 0.1)  # 100 ms appends
    per_commit = int(COMMIT_EVERY_S / 0.1)
    events: list[dict[str, Any]] = []
    with raw_connect(base_url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        update = {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
        }
        ws.send(json.dumps(update))
        assert recv_json(ws)["type"] == "session.updated"
        commits = 0
        frames = []
        for i, offset in enumerate(range(0, len(audio), step)):
            chunk = base64.b64encode(audio[offset : offset + step]).decode()
            frames.append(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            if (i + 1) % per_commit == 0:
                frames.append('{"type": "input_audio_buffer.commit"}')
                commits += 1
        sender = threading.Thread(target=lambda: [ws.send(f) for f in frames], daemon=True)
        sender.start()
        deadline = time.monotonic() + 300
        while sum(e["type"] == COMPLETED for e in events) < commits:
            assert time.monotonic() < deadline, [e["type"] for e in events][-20:]
            event = recv_json(ws, timeout=max(0.1, deadline - time.monotonic()))
            OFFICIAL.validate_python(event)  # strict: the SDK's own parse is lenient
            events.append(event)
        sender.join(60)
    return events, commits


def check_every_commit(events: list[dict[str, Any]], commits: int) -> None:
    kinds = [e["type"] for e in events]
    committed = [e["item_id"] for e in events if e["type"] == COMMITTED]
    completed = [e["item_id"] for e in events if e["type"] == COMPLETED]
    assert len(committed) == commits and completed == committed  # all, in commit order
    for item in committed:
        mine = [i for i, e in enumerate(events) if e.get("item_id") == item]
        named = [i for i, e in enumerate(events) if e.get("item", {}).get("id") == item]
        added = [i for i in named if kinds[i] == "conversation.item.added"]
        deltas = [i for i in mine if kinds[i] == DELTA]
        (done,) = [i for i in mine if kinds[i] == COMPLETED]
        transcribed = [i for i in mine if kinds[i] in (DELTA, COMPLETED)]
        assert len(added) == 1 and added[0] < min(transcribed), "announced before its deltas"
        if events[done]["transcript"]:
            assert deltas and max(deltas) < done  # its words came as deltas, before the end
            streamed = "".join(events[i]["delta"] for i in deltas)
            assert streamed.split()[-1] == events[done]["transcript"].split()[-1]


def test_a_flood_gets_every_commit_transcribed(server: ServerProcess) -> None:
    events, commits = flood(server.url, FLOOD_S)
    check_every_commit(events, commits)
    assert not [e for e in events if e["type"] == "error"]


def test_a_flood_past_one_and_a_half_backlogs_is_told_then_closed(tmp_path: Path) -> None:
    """40 s sent at once to a session allowed 6 s of backlog: the client is told when it
    passes 6 s, and closed (1008) at 9 s: the decodes cannot keep up with that."""
    process = start_server(
        DEMO, tmp_path, "--max-turn-seconds", "5",
        "--session-max-backlog-seconds", str(SMALL_BACKLOG_S),
    )  # fmt: skip
    try:
        audio = speech(FLOOD_S)
        events: list[dict[str, Any]] = []
        with raw_connect(process.url) as ws:
            recv_json(ws)
            update = {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
            ws.send(json.dumps(update))
            recv_json(ws)

            def send() -> None:
                with contextlib.suppress(ConnectionClosed):
                    for offset in range(0, len(audio), 4800):
                        chunk = base64.b64encode(audio[offset : offset + 4800]).decode()
                        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            with pytest.raises(ConnectionClosed):
                while True:
                    event = recv_json(ws, timeout=60)
                    OFFICIAL.validate_python(event)
                    events.append(event)
            sender.join(30)
            assert (ws.close_code, ws.close_reason) == (1008, ws.close_reason)
        errors = [e["error"] for e in events if e["type"] == "error"]
        # Told when it passes the bound (again if the decodes brought it back under the bound
        # for a moment, as documented), then the closing one.
        assert len(errors) >= 2
        assert [e["code"] for e in errors] == ["input_audio_buffer_backlog"] * len(errors)
        assert "closing" in errors[-1]["message"]
        assert not any("closing" in e["message"] for e in errors[:-1])
        name = 'kubescribe_realtime_sessions_total{reason="backlog"}'
        assert metric(process, name) == 1
    finally:
        process.stop()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def _server_rss_kib(server: ServerProcess) -> int:
    """The server process and its workers."""
    pids = [server.process.pid]
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return sum(_rss_kib(pid) for pid in pids)


def test_memory_goes_back_after_flooding_sessions_end(server: ServerProcess) -> None:
    """Two floods side by side after a first one (whose allocations stay: the baseline): the
    server ends no bigger than the baseline plus a few MB, though each session held up to
    its backlog of audio (and, before the bound, the WebSocket layer all of it)."""
    flood(server.url, 10.0)
    baseline = _server_rss_kib(server)
    results: list[tuple[list[dict[str, Any]], int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(flood(server.url, FLOOD_S)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert len(results) == 2
    for events, commits in results:
        check_every_commit(events, commits)
    after = _server_rss_kib(server)
    growth_mib = (after - baseline) / 1024
    print(f"server RSS: baseline {baseline / 1024:.0f} MiB, after {after / 1024:.0f} MiB")
    assert growth_mib < 48, f"{growth_mib:.0f} MiB more after the sessions ended"


def test_clients_that_close_mid_stream_end_quietly(server: ServerProcess) -> None:
    """A client's own close, however it falls between the server's sends, is counted as
    ``client_closed``: not ``error``, and no ERROR in the log (the fixture checks the log)."""
    name = "kubescribe_realtime_sessions_total"
    closed_before = metric(server, f'{name}{{reason="client_closed"}}')
    errors_before = metric(server, f'{name}{{reason="error"}}')
    audio = speech(10.0)
    for _ in range(3):
        with raw_connect(server.url) as ws:
            recv_json(ws)
            update = {"type": "session.update", "session": {"type": "transcription"}}
            ws.send(json.dumps(update))
            recv_json(ws)
            for offset in range(0, len(audio), 4800):
                chunk = base64.b64encode(audio[offset : offset + 4800]).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            while recv_json(ws, timeout=60)["type"] != DELTA:  # the server is sending
                pass
    deadline = time.monotonic() + 30
    while metric(server, f'{name}{{reason="client_closed"}}') < closed_before + 3:
        assert time.monotonic() < deadline, "the closed sessions were never counted"
        time.sleep(0.1)
    assert metric(server, f'{name}{{reason="error"}}') == errors_before


def test_a_drain_with_finals_pending_sends_them_all_then_closes(tmp_path: Path) -> None:
    """SIGTERM while a flooding session has turns committed and not yet transcribed: every
    one of them gets its ``completed``, then the close 1001, and the server exits."""
    process = start_server(DEMO, tmp_path, "--max-turn-seconds", "3")
    try:
        audio = speech(30.0)
        with raw_connect(process.url) as ws:
            recv_json(ws)
            update = {
                "type": "session.update",
                "session": {"type": "transcription", "audio": {"input": {"turn_detection": None}}},
            }
            ws.send(json.dumps(update))
            recv_json(ws)
            for offset in range(0, len(audio), 4800):  # 30 s at once: 10 turns cut
                chunk = base64.b64encode(audio[offset : offset + 4800]).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            events = [recv_json(ws, timeout=60)]
            while events[-1]["type"] != COMMITTED:  # the first turn is committed
                events.append(recv_json(ws, timeout=60))
            process.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                while True:
                    event = recv_json(ws, timeout=60)
                    OFFICIAL.validate_python(event)
                    events.append(event)
            assert ws.close_code == 1001
        committed = [e["item_id"] for e in events if e["type"] == COMMITTED]
        completed = [e["item_id"] for e in events if e["type"] == COMPLETED]
        assert len(committed) >= 2 and completed == committed
        assert process.process.wait(60) == 0
    finally:
        process.stop()


def test_logprobs_when_included_spell_the_deltas_and_the_transcript(server: ServerProcess) -> None:
    audio = speech(6.0)
    with raw_connect(server.url) as ws:
        recv_json(ws)
        update = {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {"input": {"turn_detection": None}},
                "include": ["item.input_audio_transcription.logprobs"],
            },
        }
        ws.send(json.dumps(update))
        assert recv_json(ws)["session"]["include"] == ["item.input_audio_transcription.logprobs"]
        for offset in range(0, len(audio), 4800):
            chunk = base64.b64encode(audio[offset : offset + 4800]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send('{"type": "input_audio_buffer.commit"}')
        events = [recv_json(ws, timeout=60)]
        while events[-1]["type"] != COMPLETED:
            events.append(recv_json(ws, timeout=60))
    for event in events:
        OFFICIAL.validate_python(event)
    deltas = [e for e in events if e["type"] == DELTA]
    completed = events[-1]
    assert completed["transcript"] and deltas
    for event in deltas:
        assert "".join(p["token"] for p in event["logprobs"]) == event["delta"]
    probs = completed["logprobs"]
    assert "".join(p["token"] for p in probs) == completed["transcript"]
    assert all(p["logprob"] <= 0 and p["bytes"] == list(p["token"].encode()) for p in probs)
    assert any(p["logprob"] < 0 for p in probs)  # posteriors, not a constant


def test_a_session_that_never_configures_itself_is_closed(server: ServerProcess) -> None:
    with raw_connect(server.url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        error = recv_json(ws, timeout=30)
        assert error["error"]["code"] == "session_not_configured"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
