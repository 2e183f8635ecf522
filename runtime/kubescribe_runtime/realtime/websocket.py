"""The WebSocket of one realtime session: simple-websocket's server with a bounded inbox.

simple-websocket reads the socket on a thread of its own into an unbounded list; a client that
sends faster than its session takes events would grow the process without limit. Here the
reader waits while :data:`MAX_QUEUED_MESSAGES` events are queued, so the kernel's receive
buffer fills and TCP pushes back on the client (the session's own bound is its audio backlog,
:mod:`.runner`). Also here: the browser sub-protocols, a send timeout (a client
that never reads), and a client's own close seen as a close, not as a failed send.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import socket
import struct
import threading
from typing import Any

from simple_websocket import ConnectionClosed
from simple_websocket import Server as _Server
from wsproto.utilities import LocalProtocolError

MAX_QUEUED_MESSAGES = 4  # events read ahead of the session; each at most max_message_size
# The kernel's receive buffer for a session (Linux doubles it): a few seconds of real-time audio,
# so that what a paused session leaves unread is small, and a client's ping behind it near.
RECEIVE_BUFFER_BYTES = 128 * 1024
# Sub-protocols a browser may offer (it must get one of them back); the API key one
# (``openai-insecure-api-key.<key>``) is read by :mod:`kubescribe_runtime.auth`, never echoed.
SUBPROTOCOLS = ("realtime", "openai-beta.realtime-v1")
_SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")


class _GatedSocket:
    """The connection's socket, whose ``recv`` waits until the inbox has room."""

    def __init__(self, sock: Any, inbox: BoundedWebSocket) -> None:
        self._sock = sock
        self._inbox = inbox

    def recv(self, size: int) -> bytes:
        self._inbox.wait_for_room()
        data: bytes = self._sock.recv(size)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class BoundedWebSocket(_Server):
    def __init__(self, environ: dict[str, Any], max_message_size: int) -> None:
        self._room = threading.Condition()
        self._closing = False
        environ = dict(environ)
        self.raw_socket: socket.socket | None = None
        for key in _SOCKET_KEYS:
            if key in environ:
                self.raw_socket = environ[key]
                environ[key] = _GatedSocket(environ[key], self)
                break
        if isinstance(self.raw_socket, socket.socket):
            with contextlib.suppress(OSError):
                self.raw_socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES
                )
        super().__init__(
            environ, subprotocols=list(SUBPROTOCOLS), max_message_size=max_message_size
        )

    def choose_subprotocol(self, request: Any) -> str | None:
        offered = list(request.subprotocols)
        return next((p for p in SUBPROTOCOLS if p in offered), None)

    # -- the inbox -------------------------------------------------------------------------

    def wait_for_room(self) -> None:
        with self._room:
            self._room.wait_for(
                lambda: self._closing or len(self.input_buffer) < MAX_QUEUED_MESSAGES
            )

    def _release(self) -> None:
        with self._room:
            self._room.notify_all()

    def receive(self, timeout: float | None = None) -> Any:
        try:
            return super().receive(timeout)
        finally:
            self._release()

    @property
    def queued(self) -> int:
        return len(self.input_buffer)

    # -- output and the end ----------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        try:
            super().send(data)
        except LocalProtocolError as exc:  # the client's close frame came first
            raise ConnectionClosed(self.close_reason, self.close_message) from exc

    def set_send_timeout(self, seconds: float) -> None:
        """A send blocked this long (a client that never reads) fails instead of hanging."""
        if isinstance(self.raw_socket, socket.socket):
            whole = int(seconds)
            self.raw_socket.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_SNDTIMEO,
                struct.pack("ll", whole, int((seconds - whole) * 1e6)),
            )

    def finish(self, code: int, reason: str) -> None:
        """Close with ``code`` (nothing happens on a connection already closed)."""
        with contextlib.suppress(ConnectionClosed, OSError, LocalProtocolError):
            self.close(code, reason[:120])
        self._stop_reading()

    def abort(self) -> None:
        """Drop the connection without a close frame (the client stopped reading)."""
        self.connected = False
        if isinstance(self.raw_socket, socket.socket):
            with contextlib.suppress(OSError):
                self.raw_socket.shutdown(socket.SHUT_RDWR)
        self._stop_reading()

    def _stop_reading(self) -> None:
        with self._room:
            self._closing = True
            self._room.notify_all()


def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def give_memory_back() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise: a session's audio
    arrays are freed when it ends, but the process would stay at its peak)."""
    if _TRIM is not None:
        _TRIM(0)
