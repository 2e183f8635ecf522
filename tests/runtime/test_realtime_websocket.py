"""The session's WebSocket over a real socket pair: a client that sends faster than the session
takes events is pushed back by TCP (a bounded inbox, not a growing list), the browser
sub-protocols are answered, and a client's close that races a send reads as a close."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubescribe_runtime.realtime.websocket import MAX_QUEUED_MESSAGES, BoundedWebSocket
from simple_websocket import ConnectionClosed
from wsproto.frame_protocol import FrameProtocol


def _environ(sock: socket.socket, protocols: str | None = None) -> dict[str, object]:
    environ: dict[str, object] = {
        "werkzeug.socket": sock,
        "HTTP_HOST": "localhost",
        "HTTP_UPGRADE": "websocket",
        "HTTP_CONNECTION": "Upgrade",
        "HTTP_SEC_WEBSOCKET_KEY": base64.b64encode(os.urandom(16)).decode(),
        "HTTP_SEC_WEBSOCKET_VERSION": "13",
    }
    if protocols:
        environ["HTTP_SEC_WEBSOCKET_PROTOCOL"] = protocols
    return environ


class Peer:
    """The client's end of the pair, past the server's handshake answer: masked frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameProtocol(extensions=[], client=True)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(1)
        assert answer.startswith(b"HTTP/1.1 101"), answer

    def text(self, data: str) -> bytes:
        return self.frames.send_data(data, fin=True)

    def close(self, code: int) -> bytes:
        return self.frames.close(code)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    for sock in (server, client):  # small kernel buffers: pushback shows within a few frames
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield server, client
    server.close()
    client.close()


def test_a_client_faster_than_its_session_is_pushed_back_not_buffered(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_sock, client_sock = pair
    ws = BoundedWebSocket(_environ(server_sock), max_message_size=1 << 20)
    peer = Peer(client_sock)
    frame = peer.text("x" * 16_000)
    total = 400  # 6.4 MB the client would like to send
    sent = threading.Event()
    progress = [0]

    def flood() -> None:
        client_sock.settimeout(30)
        for _ in range(total):
            client_sock.sendall(frame)
            progress[0] += 1
        sent.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    # The session takes nothing: the client stalls once the inbox and the kernel buffers are
    # full (a poll on the sender's progress standing still, with a deadline).
    deadline = time.monotonic() + 30
    last, still_since = -1, time.monotonic()
    while time.monotonic() - still_since < 1.0:
        assert time.monotonic() < deadline, "the sender never stalled"
        if progress[0] != last:
            last, still_since = progress[0], time.monotonic()
        time.sleep(0.05)
    assert not sent.is_set() and progress[0] < total // 4, progress[0]
    assert ws.queued <= MAX_QUEUED_MESSAGES
    # The session reads again: everything arrives, in order, and the sender finishes.
    received = 0
    while received < total:
        message = ws.receive(timeout=10)
        assert message == "x" * 16_000
        received += 1
        assert ws.queued <= MAX_QUEUED_MESSAGES
    assert sent.wait(10)
    sender.join(10)
    ws.finish(1000, "")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ("realtime, openai-insecure-api-key.sk-123, openai-beta.realtime-v1", "realtime"),
        ("openai-insecure-api-key.sk-123, openai-beta.realtime-v1", "openai-beta.realtime-v1"),
        ("openai-insecure-api-key.sk-123", None),  # the key is never echoed
        (None, None),
    ],
)
def test_the_browser_sub_protocol_is_answered_but_never_the_key(
    pair: tuple[socket.socket, socket.socket], offered: str | None, chosen: str | None
) -> None:
    server_sock, client_sock = pair
    ws = BoundedWebSocket(_environ(server_sock, offered), max_message_size=1 << 20)
    data = b""
    while b"\r\n\r\n" not in data:
        data += client_sock.recv(4096)
    head = data.decode().lower()
    assert ws.subprotocol == chosen
    assert "api-key" not in head
    if chosen:
        assert f"sec-websocket-protocol: {chosen}" in head
    ws.finish(1000, "")


def test_a_send_that_races_the_clients_close_is_a_close(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_sock, client_sock = pair
    ws = BoundedWebSocket(_environ(server_sock), max_message_size=1 << 20)
    peer = Peer(client_sock)
    client_sock.sendall(peer.close(1000))
    deadline = time.monotonic() + 10
    while ws.connected:  # the reader thread took the close frame
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The session's loop looked at ``connected`` just before the close came in.
    ws.connected = True
    with pytest.raises(ConnectionClosed):
        ws.send('{"type": "conversation.item.input_audio_transcription.delta"}')
