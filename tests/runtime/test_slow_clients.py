"""Slow clients cost a socket, not the server (issue 20.2): the real server process with
clients that trickle their request head or body. The server's event loop reads each request
whole before a thread serves it, answers probes itself, and answers 408 past the deadlines.

Nothing here measures time: the socket timeouts only bound a test that would otherwise hang.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from rt_fixtures import encode, tone_sentence
from rt_server import ServerProcess, post, running

pytestmark = pytest.mark.xdist_group("runtime-server")

PATTERN = "lo hi hi lo"
TEXT = "low high high low"
# Few threads and admission slots, so that a handful of slow clients would take them all.
SMALL = ("--http-threads", "4", "--max-requests", "2")


@pytest.fixture(scope="module")
def server(tone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Deadlines far longer than a test: slow clients stay open, unanswered, meanwhile."""
    with running(tone_dir, tmp_path_factory.mktemp("logs"), *SMALL, "--header-timeout", "600") as s:
        yield s


@pytest.fixture(scope="module")
def strict(tone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Short deadlines, 1 MiB uploads: two held at once at most (--max-requests 2)."""
    with running(
        tone_dir, tmp_path_factory.mktemp("logs"), *SMALL,
        "--header-timeout", "1", "--body-min-rate-kb", "256", "--max-upload-mb", "1",
    ) as server:  # fmt: skip
        yield server


def connect(server: ServerProcess) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def upload_head(length: int) -> bytes:
    return (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: kubescribe\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def response_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (bounded by the socket's timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_trickled_head_is_408_and_counted(strict: ServerProcess) -> None:
    with connect(strict) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: k")
        answer = response_of(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "header_timeout"' in answer
    metrics = requests.get(strict.url + "/metrics", timeout=60).text
    assert 'kubescribe_requests_refused_total{reason="header_timeout"} 1.0' in metrics


def test_a_body_below_the_minimum_rate_is_408(strict: ServerProcess) -> None:
    with connect(strict) as sock:
        sock.sendall(upload_head(1_000_000) + b"--b\r\n")
        answer = response_of(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "body_too_slow"' in answer


def test_bodies_being_read_hold_at_most_max_requests_uploads(strict: ServerProcess) -> None:
    """Three unfinished 1 MiB uploads, 0.8 MiB sent each: the bytes held would pass two
    uploads' worth, so one of them is refused (429), the others end on their deadline."""
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(strict)) for _ in range(3)]
        for sock in socks:
            sock.sendall(upload_head(1024 * 1024) + b"x" * (800 * 1024))
        answers = sorted(response_of(sock)[:12] for sock in socks)
    assert answers == [b"HTTP/1.1 408", b"HTTP/1.1 408", b"HTTP/1.1 429"]


def test_probes_and_transcriptions_are_served_while_slow_clients_hold_connections(
    server: ServerProcess,
) -> None:
    """Four times as many trickling heads as threads and four times as many unfinished
    uploads as admission slots: none of them holds a thread or a slot, so probes, a
    transcription and a realtime-free request all come through while they are open."""
    audio = encode(tone_sentence(PATTERN))
    with ExitStack() as stack:
        slow = [stack.enter_context(connect(server)) for _ in range(24)]
        for sock in slow[:16]:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHo")
        for sock in slow[16:]:
            sock.sendall(upload_head(1_000_000) + b"--b\r\n")
        for path in ("/healthz", "/readyz"):
            assert requests.get(server.url + path, timeout=60).status_code == 200
        for _ in range(3):  # more than --max-requests: slots were not taken by the uploads
            answer = post(server.url, audio, mime="audio/wav", timeout=60)
            assert answer.status_code == 200, answer.text
            assert answer.json()["text"] == TEXT
        assert requests.get(server.url + "/v1/models", timeout=60).status_code == 200
        # the slow ones are still open, unanswered: nothing was refused for them yet
        for sock in slow:
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)


def test_keep_alive_chunked_and_expect_continue_uploads(server: ServerProcess) -> None:
    audio = encode(tone_sentence(PATTERN))
    with requests.Session() as session:  # two requests on one kept-alive connection
        for _ in range(2):
            answer = session.post(
                server.url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", audio, "audio/wav")},
                data={"model": "demo"},
                timeout=60,
            )
            assert answer.json()["text"] == TEXT
    boundary = "kubescribe"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        "POST /v1/audio/transcriptions HTTP/1.1\r\nHost: k\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
    )
    with connect(server) as sock:  # chunked, as a client streaming its upload sends it
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
        for i in range(0, len(body), 4096):
            piece = body[i : i + 4096]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        assert TEXT.encode() in response_of(sock)
    with connect(server) as sock:  # curl's way with large uploads
        sock.sendall(f"{head}Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        answer = response_of(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and TEXT.encode() in answer


def test_an_upload_over_the_limit_is_answered_413_while_its_body_still_comes(
    strict: ServerProcess,
) -> None:
    """Refused from its head, while the client goes on sending the body (as clients do that
    do not wait for 100 Continue): the answer is read, not lost to a reset connection."""
    with connect(strict) as sock:
        sock.sendall(upload_head(3 * 1024 * 1024) + b"x" * (1024 * 1024))
        for _ in range(16):  # 2 MiB more, after the server has answered
            sock.sendall(b"x" * (128 * 1024))
        sock.shutdown(socket.SHUT_WR)
        answer = response_of(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"code": "file_too_large"' in answer


def test_a_partial_request_pipelined_behind_a_whole_one_holds_no_thread(
    strict: ServerProcess,
) -> None:
    """Eight connections each send a whole request and, in the same packet, the start of a
    next one that never ends (twice --http-threads): each gets its answer, then a 408 for
    the partial one, and a transcription meanwhile is served."""
    audio = encode(tone_sentence(PATTERN))
    with ExitStack() as stack:
        socks = [stack.enter_context(connect(strict)) for _ in range(8)]
        for sock in socks:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: k\r\n\r\nGET /v1/models HTTP/1.1\r\nHo")
        answer = post(strict.url, audio, mime="audio/wav", timeout=60)
        assert answer.status_code == 200 and answer.json()["text"] == TEXT
        for sock in socks:
            both = response_of(sock)
            assert both.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in both, both[-300:]


def test_at_max_connections_the_slowest_make_room_for_probes_and_requests(
    tone_dir: Path, tmp_path: Path
) -> None:
    """Three times --max-connections trickling heads: each new connection evicts the oldest
    of them (503), so probes and a transcription still get in instead of waiting in the
    listen backlog."""
    audio = encode(tone_sentence(PATTERN))
    with (
        running(
            tone_dir, tmp_path, *SMALL, "--header-timeout", "600", "--max-connections", "8"
        ) as server,
        ExitStack() as stack,
    ):
        slow = []
        for _ in range(24):  # each sends its first bytes before the next one connects
            slow.append(stack.enter_context(connect(server)))
            slow[-1].sendall(b"GET /v1/models HTTP/1.1\r\nHo")
        for path in ("/healthz", "/readyz"):
            assert requests.get(server.url + path, timeout=60).status_code == 200
        answer = post(server.url, audio, mime="audio/wav", timeout=60)
        assert answer.status_code == 200 and answer.json()["text"] == TEXT
        evicted = [response_of(sock) for sock in slow[:8]]  # the oldest went first
        assert all(b"HTTP/1.1 503 " in e and b"too_many_connections" in e for e in evicted)
        metrics = requests.get(server.url + "/metrics", timeout=60).text
        assert 'kubescribe_requests_refused_total{reason="connections"}' in metrics
