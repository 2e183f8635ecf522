"""Realtime session helpers for tests against the real server: audio in the protocol's formats,
a session driven by the official ``openai`` client at real-time pace, and a raw WebSocket
client for what the official one would never send."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr
from kubescribe_runtime import g711
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import Message, Request

CHUNK_S = 0.1


def pcm24(samples16k: npt.NDArray[np.float32]) -> bytes:
    """16 kHz float samples → the protocol's ``audio/pcm``: 16-bit little-endian at 24 kHz."""
    wave = soxr.resample(samples16k, 16000, 24000)
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def g711_8k(samples16k: npt.NDArray[np.float32], law: g711.Law) -> bytes:
    return g711.from_float(soxr.resample(samples16k, 16000, 8000), law)


def bytes_per_second(fmt: str) -> int:
    return 48000 if fmt == "audio/pcm" else 8000


def session_config(
    fmt: str = "audio/pcm", vad: Any = "server_vad", language: str = "en"
) -> dict[str, Any]:
    audio_format: dict[str, Any] = {"type": fmt}
    if fmt == "audio/pcm":
        audio_format["rate"] = 24000
    turn_detection = None if vad is None else {"type": "server_vad", "silence_duration_ms": 500}
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": audio_format,
                "transcription": {"model": "kubescribe", "language": language},
                "turn_detection": turn_detection,
            }
        },
    }


@dataclass
class Received:
    events: list[Any] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # since the first audio was sent

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    def first_time(self, kind: str) -> float:
        return next(t for e, t in zip(self.events, self.times, strict=True) if e.type == kind)


def stream_with_official_client(
    base_url: str,
    audio: bytes,
    fmt: str = "audio/pcm",
    vad: Any = "server_vad",
    commit: bool = False,
    completions: int = 1,
    timeout_s: float = 60,
    language: str = "en",
) -> Received:
    """One session: ``session.update``, the audio at real-time pace in 100 ms appends (then a
    commit when asked), and every server event until ``completions`` turns completed."""
    from openai import OpenAI  # here: the unit tests that share this module need no client

    client = OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
    received = Received()
    with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        conn.session.update(session=session_config(fmt, vad, language))  # type: ignore[arg-type]
        step = int(bytes_per_second(fmt) * CHUNK_S)
        step -= step % 2
        started = time.monotonic()

        def send() -> None:
            for i, offset in enumerate(range(0, len(audio), step)):
                conn.input_audio_buffer.append(
                    audio=base64.b64encode(audio[offset : offset + step]).decode()
                )
                time.sleep(max(0.0, started + (i + 1) * CHUNK_S - time.monotonic()))
            if commit:
                conn.input_audio_buffer.commit()

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            event = conn.recv()
            received.events.append(event)
            received.times.append(time.monotonic() - started)
            done = received.of("conversation.item.input_audio_transcription.completed")
            if len(done) >= completions:
                break
        sender.join(timeout_s)
    return received


def raw_connect(base_url: str, query: str = "?intent=transcription") -> ClientConnection:
    url = base_url.replace("http://", "ws://") + "/v1/realtime" + query
    return connect(url, max_size=None, compression=None, open_timeout=10)


def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message = ws.recv(timeout=timeout)
    assert isinstance(message, str), message
    event: dict[str, Any] = json.loads(message)
    return event


def recv_until(ws: ClientConnection, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``kind``."""
    out = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} event in {timeout:g} s; the last ones: {out[-3:]}"
        event = recv_json(ws, remaining)
        out.append(event)
        if event["type"] == kind:
            return out


class DeafClient:
    """A WebSocket client that never reads: a raw socket with a tiny receive buffer that sends
    the handshake, then ``count`` copies of ``frame`` (each answered by the server with an
    event), and reads nothing after the handshake."""

    def __init__(self, base_url: str, frame: str, count: int) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        self._ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self._ws.send(Request(host=host, target="/v1/realtime?intent=transcription"))
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)  # the handshake only, byte by byte
        assert response.startswith(b"HTTP/1.1 101"), response
        self._ws.receive_data(response)
        list(self._ws.events())  # the accepted handshake
        self._frame = self._ws.send(Message(data=frame))
        self._count = count
        self._thread = threading.Thread(target=self._pester, daemon=True)
        self._thread.start()

    def _pester(self) -> None:
        with contextlib.suppress(OSError):  # the server dropped the connection
            for _ in range(self._count):
                self.sock.sendall(self._frame)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(10)
