"""Realtime transcription sessions against the real `kubescribe serve` process with the demo
model, driven by the official `openai` client at real-time pace (issue 13.2-13.5, 13.8)."""

from __future__ import annotations

import base64
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
import soxr
from rt_calls import ROOT, sentences
from rt_realtime import (
    g711_8k,
    pcm24,
    raw_connect,
    recv_json,
    recv_until,
    session_config,
    stream_with_official_client,
)
from rt_server import ServerProcess, post, running, start_server
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.common import wav_bytes, word_error_rate

pytestmark = pytest.mark.xdist_group("runtime-server")

DEMO = ROOT / "examples" / "models" / "demo"
SR = 16000
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        DEMO, tmp_path_factory.mktemp("logs"),
        "--max-sessions", "2", "--session-idle-timeout", "3", "--partial-interval-ms", "400",
        "--max-requests", "1",
    ) as process:  # fmt: skip
        yield process


def padded(index: int, before_s: float = 0.5, after_s: float = 1.0) -> tuple[np.ndarray, str]:
    (sentence,) = sentences([index])
    quiet = np.random.default_rng(index).standard_normal
    audio = np.concatenate(
        [1e-3 * quiet(int(before_s * SR)), sentence.audio, 1e-3 * quiet(int(after_s * SR))]
    ).astype(np.float32)
    return audio, sentence.text


def as_session_holds(payload: bytes) -> np.ndarray:
    """24 kHz PCM16 at the model's rate, resampled as a session does (one soxr stream)."""
    samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    stream = soxr.ResampleStream(24000, SR, 1, dtype="float32")
    return np.concatenate([stream.resample_chunk(samples), stream.resample_chunk(
        np.zeros(0, np.float32), last=True)])  # fmt: skip


def float_wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SR, subtype="FLOAT", format="WAV")
    return buffer.getvalue()


def test_deltas_arrive_while_the_caller_speaks_and_the_final_equals_offline(
    server: ServerProcess,
) -> None:
    audio, reference = padded(2)
    got = stream_with_official_client(server.url, pcm24(audio))
    kinds = [e.type for e in got.events]
    assert kinds[:3] == ["session.created", "session.updated", "input_audio_buffer.speech_started"]
    stopped, committed = (
        kinds.index("input_audio_buffer.speech_stopped"),
        kinds.index("input_audio_buffer.committed"),
    )
    assert stopped < committed < kinds.index(COMPLETED) == len(kinds) - 1
    deltas = got.of(DELTA)
    assert deltas, kinds
    # Partials while speaking: the first delta comes before the end of speech was even sent.
    (sentence_end_s,) = [0.5 + len(sentences([2])[0].audio) / SR]
    assert got.first_time(DELTA) < sentence_end_s
    (completed,) = got.of(COMPLETED)
    assert completed.item_id == deltas[0].item_id
    # The deltas only ever append; they carry the turn's words as the partial decodes saw
    # them (the final decode of the whole turn may still correct a word: it is authoritative).
    streamed = "".join(d.delta for d in deltas)
    assert word_error_rate([completed.transcript], [streamed]) <= 0.2
    # The final comes from one decode of the turn: the same text as the offline route on
    # the same audio (the turn as the session holds it: the client's 24 kHz PCM at the
    # model's rate, from its padded start, for its duration; the 16 kHz original differs
    # from it by the round trip, enough to change a letter of a word).
    start = got.of("input_audio_buffer.speech_started")[0].audio_start_ms * SR // 1000
    turn = as_session_holds(pcm24(audio))[start : start + round(completed.usage.seconds * SR)]
    offline = post(server.url, float_wav(turn), mime="audio/wav").json()["text"]
    assert completed.transcript == offline
    assert word_error_rate([reference], [completed.transcript]) <= 0.2
    assert completed.usage.type == "duration"
    assert 3.0 < completed.usage.seconds < len(audio) / SR + 0.1
    started = got.of("input_audio_buffer.speech_started")[0]
    assert abs(started.audio_start_ms - 200) <= 200  # speech at 0.5 s less 300 ms of padding


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_telephone_audio_with_manual_commits(server: ServerProcess, law: str) -> None:
    audio, reference = padded(5, before_s=0.2, after_s=0.3)
    got = stream_with_official_client(
        server.url,
        g711_8k(audio, law),
        fmt=f"audio/{law}",
        vad=None,
        commit=True,
    )
    assert got.of("input_audio_buffer.speech_started") == []  # no server VAD
    (committed,) = got.of("input_audio_buffer.committed")
    (completed,) = got.of(COMPLETED)
    assert completed.item_id == committed.item_id
    assert completed.usage.seconds == pytest.approx(len(audio) / SR, abs=0.15)
    assert word_error_rate([reference], [completed.transcript]) <= 0.35


def test_a_language_the_model_does_not_serve_is_an_error_naming_the_served_ones(
    server: ServerProcess,
) -> None:
    with raw_connect(server.url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        update = {
            "type": "session.update",
            "event_id": "u1",
            "session": session_config(language="fr"),
        }
        ws.send(json.dumps(update))
        error = recv_json(ws)
    assert error["type"] == "error"
    assert error["error"]["code"] == "unsupported_language"
    assert error["error"]["event_id"] == "u1"
    assert "en" in error["error"]["message"]


def test_over_max_sessions_an_error_event_then_a_close_with_the_reason(
    server: ServerProcess,
) -> None:
    first, second = raw_connect(server.url), raw_connect(server.url)
    try:
        for ws in (first, second):
            assert recv_json(ws)["type"] == "session.created"
        # Sessions are bounded by --max-sessions, not by the requests' admission (here 1).
        audio, _ = padded(1, after_s=0.2)
        assert post(server.url, wav_bytes(audio), mime="audio/wav").status_code == 200
        with raw_connect(server.url) as third:
            error = recv_json(third)
            assert error["error"]["code"] == "session_limit_reached"
            with pytest.raises(ConnectionClosed):
                third.recv(timeout=10)
            assert third.close_code == 1013
            assert third.close_reason and "at most 2" in third.close_reason
    finally:
        first.close()
        second.close()
    time.sleep(0.3)
    with raw_connect(server.url) as again:  # a slot is free again
        assert recv_json(again)["type"] == "session.created"


def test_an_idle_session_is_closed(server: ServerProcess) -> None:
    with raw_connect(server.url) as ws:
        assert recv_json(ws)["type"] == "session.created"
        error = recv_json(ws, timeout=10)
        assert error["error"]["code"] == "session_idle_timeout"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000


@pytest.mark.parametrize(
    ("query", "code"), [("", "unsupported_intent"), ("?intent=conversation", "unsupported_intent")]
)
def test_only_transcription_sessions_are_accepted(
    server: ServerProcess, query: str, code: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        raw_connect(server.url, query)
    assert refused.value.response.status_code == 400
    assert code.encode() in refused.value.response.body


def test_a_plain_http_get_is_told_to_upgrade(server: ServerProcess) -> None:
    answer = requests.get(server.url + "/v1/realtime?intent=transcription", timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "websocket_required"


def test_sessions_report_metrics(server: ServerProcess) -> None:
    audio, _ = padded(8, after_s=0.8)
    stream_with_official_client(server.url, pcm24(audio))
    text = requests.get(server.url + "/metrics", timeout=10).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("kubescribe_realtime")
    }
    assert values["kubescribe_realtime_turns_total"] >= 1
    assert values["kubescribe_realtime_audio_seconds_total"] >= len(audio) / SR - 0.1
    assert values["kubescribe_realtime_partial_latency_seconds_count"] >= 1
    assert values['kubescribe_realtime_vad_events_total{event="speech_started"}'] >= 1
    assert values["kubescribe_realtime_sessions_active"] == 0


def test_sigterm_finishes_the_open_turn_then_closes_1001(tmp_path: Path) -> None:
    process = start_server(DEMO, tmp_path)
    try:
        audio, _ = padded(11, after_s=0.0)
        payload = pcm24(audio)
        with raw_connect(process.url) as ws:
            recv_json(ws)
            ws.send(json.dumps({"type": "session.update", "session": session_config()}))
            recv_json(ws)
            for offset in range(0, len(payload) // 2, 4800):  # half the sentence, paced
                chunk = base64.b64encode(payload[offset : offset + 4800]).decode()
                ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                time.sleep(0.1)
            process.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2
            while requests.get(process.url + "/readyz", timeout=5).status_code != 503:
                assert time.monotonic() < deadline, "/readyz did not turn 503 at once"
                time.sleep(0.05)
            with pytest.raises(InvalidStatus) as refused:  # no new sessions while draining
                raw_connect(process.url)
            assert refused.value.response.status_code == 503
            events = recv_until(ws, "conversation.item.input_audio_transcription.completed")
            kinds = [e["type"] for e in events]
            assert "input_audio_buffer.committed" in kinds
            assert events[-1]["transcript"]
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
            assert ws.close_reason and "reconnect" in ws.close_reason
        assert process.process.wait(30) == 0
    finally:
        process.stop()


@pytest.mark.parametrize("extra", [(), ("--format", "pcmu", "--manual")])
def test_the_example_client_prints_partials_and_finals(
    server: ServerProcess, extra: tuple[str, ...]
) -> None:
    reference = (ROOT / "examples" / "audio" / "sample.txt").read_text().strip()
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "examples" / "clients" / "realtime_wav.py"),
            str(ROOT / "examples" / "audio" / "sample.wav"),
            "--base-url", server.url + "/v1", "--speed", "2", *extra,
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    partial, final = result.stdout.split("[final] ")
    assert partial.strip()  # deltas printed as they came, before the final
    transcript = final.strip()
    assert word_error_rate([reference], [transcript]) <= (0.1 if not extra else 0.4)
