"""The real server process under load and hang-ups (issue 12): admission once per request,
cancellation, drain during a long request, liveness of a wedged inference loop.

Batches are slowed down with ``--batch-wait-full-delay`` (every batch waits ``--max-delay-ms``)
so that requests overlap whatever the machine's speed; nothing here measures time.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from rt_fixtures import encode, tone_sentence
from rt_server import ServerProcess, metric, post, running, start_server, wait_until

pytestmark = pytest.mark.xdist_group("runtime-server")

# 4 s windows, 0.5 s overlap: a 32-word call of 25.6 s is 8 windows.
WINDOWS = ("--window-seconds", "4", "--window-overlap-seconds", "0.5")
SLOW = ("--max-batch-size", "2", "--max-delay-ms", "300", "--batch-wait-full-delay")


def words(n: int) -> str:
    return " ".join(["lo", "hi"] * (n // 2))


def expected(pattern: str) -> str:
    return " ".join("low" if w == "lo" else "high" for w in pattern.split())


def windows_decoded(server: ServerProcess) -> float:
    return metric(server, "kubescribe_batch_size_sum")


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        (("--max-requests", "3"), "too_many_requests"),
        (("--max-backlog-seconds", "60"), "backlog_full"),  # two calls of 25.6 s fit, not three
    ],
    ids=["requests", "audio-seconds"],
)
def test_concurrent_long_requests_are_refused_at_once_or_complete(
    tone_dir: Path, tmp_path: Path, limits: tuple[str, ...], code: str
) -> None:
    """Eight calls of 8 windows each overfill the old window queue (--max-queue 2) many times:
    every request is either refused before any of its windows is decoded, or completes."""
    with running(tone_dir, tmp_path, *WINDOWS, *SLOW, "--max-queue", "2", *limits) as server:
        pattern = words(32)
        audio = encode(tone_sentence(pattern))
        before = windows_decoded(server)
        assert post(server.url, audio, mime="audio/wav").json()["text"] == expected(pattern)
        per_request = windows_decoded(server) - before
        assert per_request == 8
        before = windows_decoded(server)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(server.url, audio, mime="audio/wav"), range(8)))
        done = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(done) + len(refused) == 8, [a.status_code for a in answers]
        assert done and refused
        assert all(a.json()["text"] == expected(pattern) for a in done)
        assert {a.json()["error"]["code"] for a in refused} == {code}
        assert all(int(a.headers["Retry-After"]) >= 1 for a in refused)
        # refused at once: a refused request cost no window, an admitted one was never aborted
        assert windows_decoded(server) - before == per_request * len(done)


def raw_upload(url: str, audio: bytes) -> socket.socket:
    """Send a whole transcription request and return the open socket, unread."""
    host, port = url.removeprefix("http://").split(":")
    boundary = "kubescribe-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nx\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head + body)
    return sock


def test_a_client_that_hangs_up_stops_costing_compute(tone_dir: Path, tmp_path: Path) -> None:
    """A 100-window upload closed after its first windows: at most the windows already handed
    to the batcher (max(2, --max-batch-size) = 2) are decoded after the close."""
    with running(tone_dir, tmp_path, *WINDOWS, *SLOW) as server:
        audio = encode(tone_sentence(words(400)))  # 320 s: 92 windows
        before = windows_decoded(server)
        sock = raw_upload(server.url, audio)
        wait_until(lambda: windows_decoded(server) - before >= 4, "no window decoded")
        sock.close()
        at_close = windows_decoded(server)
        wait_until(
            lambda: metric(server, "kubescribe_requests_in_flight") == 0, "request kept running"
        )
        settled = windows_decoded(server)
        time.sleep(1)  # nothing more comes later either
        assert windows_decoded(server) == settled
        assert settled - at_close <= 2
        assert settled - before < 20  # of 92
        # the server goes on
        pattern = words(8)
        answer = post(server.url, encode(tone_sentence(pattern)), mime="audio/wav")
        assert answer.json()["text"] == expected(pattern)


def test_sigterm_during_a_long_request_finishes_it(tone_dir: Path, tmp_path: Path) -> None:
    server = start_server(tone_dir, tmp_path, *WINDOWS, *SLOW, "--drain-timeout", "120")
    pattern = words(80)  # 64 s: 19 windows, about 3 s of batches
    with ThreadPoolExecutor(1) as pool:
        before = windows_decoded(server)
        long = pool.submit(post, server.url, encode(tone_sentence(pattern)), mime="audio/wav")
        wait_until(lambda: windows_decoded(server) - before >= 2, "the request never started")
        server.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: requests.get(server.url + "/readyz", timeout=5).status_code == 503,
            "still ready",
        )
        late = post(server.url, encode(tone_sentence("lo hi")), mime="audio/wav")
        assert late.status_code == 503 and late.headers["Retry-After"]
        answer = long.result(120)
    assert answer.status_code == 200 and answer.json()["text"] == expected(pattern)
    assert server.process.wait(60) == 0
    assert "drained: every accepted request completed" in server.log()


def test_liveness_fails_while_the_inference_loop_is_wedged(tone_dir: Path, tmp_path: Path) -> None:
    stall = tmp_path / "stall"
    server = start_server(
        tone_dir,
        tmp_path,
        "--stall-timeout",
        "1",
        env={"RT_STALL_FILE": str(stall)},
        entry=("tests/runtime/rt_stall_server.py",),
    )
    try:
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
        stall.touch()  # the model blocks from now on
        pattern = words(4)
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(post, server.url, encode(tone_sentence(pattern)), mime="audio/wav")
            wait_until(
                lambda: requests.get(server.url + "/healthz", timeout=5).status_code == 503,
                "/healthz stayed 200 with a wedged model",
            )
            answer = requests.get(server.url + "/healthz", timeout=5).json()
            assert answer["status"] == "stalled" and "no batch finished" in answer["reason"]
            # readiness keeps its meaning: loaded and not draining
            assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
            stall.unlink()  # the loop recovers
            assert stuck.result(60).json()["text"] == expected(pattern)
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        stall.unlink(missing_ok=True)
        assert server.stop() == 0


def test_idle_is_alive(tone_dir: Path, tmp_path: Path) -> None:
    with running(tone_dir, tmp_path, "--stall-timeout", "0.2") as server:
        time.sleep(0.5)  # idle for longer than the stall timeout
        assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "alive"}
        assert np.isfinite(metric(server, "kubescribe_queued_windows"))


def test_a_hang_up_is_noticed_while_waiting_for_room_in_the_queue(tone_dir: Path) -> None:
    """In-process: the model is held, the one-window queue is full; a request waiting for room
    whose client is gone ends at once (ClientGone), queueing nothing, not at its timeout."""
    from kubescribe_runtime.config import ServeConfig
    from kubescribe_runtime.service import Service
    from kubescribe_runtime.transcriber import ClientGone

    service = Service(
        ServeConfig(model_dir=tone_dir, max_queue=1, max_batch_size=1, max_delay_ms=0, vad="off")
    )
    service.load()
    transcriber = service.transcriber
    assert transcriber is not None
    gate, running = threading.Event(), threading.Event()
    real = transcriber.batcher._run_batch

    def held(items: Any) -> Any:
        running.set()
        gate.wait(60)
        return real(items)

    transcriber.batcher._run_batch = held
    audio = encode(tone_sentence(words(80)))  # 64 s: four 20 s windows
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(transcriber.transcribe, audio)  # its window runs, held
            assert running.wait(30)
            wait_until(lambda: transcriber.batcher.depth == 1, "the queue never filled")
            gone = threading.Event()
            second = pool.submit(transcriber.transcribe, audio, None, gone.is_set)
            wait_until(lambda: transcriber.batcher.open_flows == 2, "no second request")
            gone.set()  # its client hangs up while it waits for room
            with pytest.raises(ClientGone):
                second.result(30)
            assert transcriber.batcher.depth == 1  # only the first request's window
            gate.set()
            assert first.result(60).text == expected(words(80))
    finally:
        gate.set()
        service.close()
