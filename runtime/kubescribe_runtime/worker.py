"""The gunicorn worker's event-driven intake: connections are accepted and each request read
whole by the worker's event loop (:mod:`kubescribe_runtime.intake` decides), then handed to a
thread of the pool; probes and refusals are answered by the loop itself, which never waits on
a client. See :mod:`kubescribe_runtime.server` for the serving model as a whole."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import selectors
import socket
import time
from functools import partial
from typing import IO, TYPE_CHECKING, Any

from gunicorn import http
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from kubescribe_runtime import probes
from kubescribe_runtime.intake import Intake, IntakeLimits, Verdict

if TYPE_CHECKING:
    from kubescribe_runtime.server import Application

log = logging.getLogger(__name__)

# How often the event loop checks the intake's deadlines (408 comes this much late at most).
_SWEEP_S = 0.25
# How long a connection answered by the loop (a probe, a refusal) drains what its client still
# sends before it closes.
_LINGER_S = 2.0


class _ReplayUnreader(SocketUnreader):
    """gunicorn's socket reader, reading first what the event loop already read."""

    def __init__(self, sock: socket.socket, replay: IO[bytes]) -> None:
        super().__init__(sock)
        self.replay: IO[bytes] | None = replay

    def chunk(self, size_hint: int | None = None) -> bytes:
        if self.replay is not None:
            data = self.replay.read(max(self.mxchunk, size_hint or 0))
            if data:
                return data
            self.replay.close()
            self.replay = None
        return bytes(super().chunk(size_hint))

    def leftover(self) -> bytes:
        """What the event loop read past the request (a pipelined next one)."""
        if self.replay is None:
            return b""
        rest = self.replay.read()
        self.replay.close()
        self.replay = None
        return rest or b""


def _error_response(
    status: int, message: str, code: str, type_: str = "invalid_request_error", **headers: str
) -> bytes:
    """An OpenAI-style JSON error from the event loop (the connection closes after it)."""
    error = {"message": message, "type": type_, "param": None, "code": code}
    payload = json.dumps({"error": error}).encode() + b"\n"
    return probes.raw_response(status, payload, "application/json", headers=headers)


def _too_many_connections() -> bytes:
    return _error_response(
        503,
        "the server holds --max-connections connections; retry later",
        "too_many_connections",
        "server_error",
        **{"Retry-After": "1"},
    )


def _too_many_uploads() -> bytes:
    return _error_response(
        429,
        "too many uploads are being received at once; retry later",
        "too_many_requests",
        "rate_limit_error",
        **{"Retry-After": "1"},
    )


class IntakeWorker(ThreadWorker):
    """gthread with an event-driven intake: a connection reaches the thread pool only with a
    whole request read (see the module docstring); probes are answered by the loop."""

    app: Application

    def init_process(self) -> None:
        c = self.app.config
        self.limits = IntakeLimits(
            header_timeout_s=c.header_timeout_s,
            body_min_rate=c.body_min_rate_kb * 1024,
            body_grace_s=c.header_timeout_s,
            max_body_bytes=c.max_upload_bytes + 64 * 1024,  # the multipart framing around it
            spool_dir=c.scratch_dir,
        )
        self.intakes: dict[TConn, Intake] = {}
        # Bodies being read are held at most this much together (memory, then scratch files):
        # what --max-requests uploads held at once, the scratch volume's size. Counted in
        # bytes received, not announced: a slow client announcing a large body holds nothing.
        self.spool_budget = c.max_requests * self.limits.max_body_bytes
        self.reserved: dict[TConn, int] = {}  # body bytes held, by connection
        self.spooled = 0  # their sum
        self._next_sweep = 0.0
        self.lingering: dict[TConn, float] = {}  # answered from the loop, closing: until when
        super().init_process()

    # -- connections enter the intake instead of the pool ----------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())
        if self.nr_conns - len(self.lingering) > self.app.config.max_connections:
            # Full: the oldest connection still sending its head makes room (a slow client,
            # most likely), so that a probe or a real client is never left in the backlog.
            victim = next((c for c, i in self.intakes.items() if i.head is None), None)
            self._count_rejection("connections")
            if victim is None:  # every connection is a request or a session: refuse this one
                self._send_and_forget(conn, _too_many_connections(), linger=False)
                return
            self._finish_intake(victim, self.intakes.get(victim))  # unregistered before closed
            self._send_and_forget(victim, _too_many_connections(), linger=False)
        self._start_intake(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request: read it like a new one."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_intake(conn)

    def _start_intake(self, conn: TConn, data: bytes = b"") -> None:
        conn.sock.setblocking(False)
        intake = Intake(self.limits, time.monotonic())
        self.intakes[conn] = intake
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if data:
            self._advance(conn, intake, intake.feed(data, time.monotonic()))

    def _on_readable(self, conn: TConn, client: socket.socket) -> None:
        intake = self.intakes[conn]
        try:
            data = conn.sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was whole
            if intake.head is not None and intake.head.path.startswith("/v1/audio/"):
                self._count_abandoned()  # an upload abandoned mid-way: nginx's 499
            self._drop(conn)
            return
        self._advance(conn, intake, intake.feed(data, time.monotonic()))

    def _advance(self, conn: TConn, intake: Intake, verdict: Verdict) -> None:
        held = intake.body_received
        if verdict is Verdict.MORE and held != self.reserved.get(conn, 0):
            self.spooled += held - self.reserved.get(conn, 0)
            self.reserved[conn] = held
            if self.spooled > self.spool_budget:
                self._finish_intake(conn, intake)
                self._count_rejection("requests")
                self._send_and_forget(conn, _too_many_uploads())
                return
        if intake.wants_continue:
            intake.wants_continue = False
            self._send_and_forget(conn, b"HTTP/1.1 100 Continue\r\n\r\n", close=False)
        if verdict is Verdict.MORE:
            return
        if verdict is Verdict.PROBE:
            assert intake.head is not None
            answer = probes.http_response(
                self.app.service, intake.head.path, head_only=intake.head.method == "HEAD"
            )
            self._finish_intake(conn, intake)
            self._send_and_forget(conn, answer)
        elif verdict is Verdict.REJECT:
            rejection = intake.rejection
            assert rejection is not None
            self._count_rejection(rejection.reason)
            self._finish_intake(conn, intake)
            self._send_and_forget(
                conn, _error_response(rejection.status, rejection.message, rejection.code)
            )
        else:  # READY: a worker thread parses and serves it, reading the buffer first
            self._finish_intake(conn)
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
            conn.parser.unreader = _ReplayUnreader(conn.sock, intake.request_bytes())
            conn.data_ready = True
            self.enqueue_req(conn)

    def _finish_intake(self, conn: TConn, intake: Intake | None = None) -> None:
        """Out of the intake: its reservation returned, its buffers closed unless handed on
        (``intake`` given: nothing of it is needed any more)."""
        self.intakes.pop(conn, None)
        self.spooled -= self.reserved.pop(conn, 0)
        if intake is not None:
            intake.close()
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _send_and_forget(
        self, conn: TConn, data: bytes, close: bool = True, linger: bool = True
    ) -> None:
        """A short answer from the loop: it fits the socket's empty send buffer, so a
        non-blocking send never waits. Then the connection closes, lingering: what the client
        still sends (the body of a refused upload) is read and dropped for a moment, since
        closing on unread bytes resets the connection, and the client may lose the answer."""
        with contextlib.suppress(OSError):
            conn.sock.send(data)
        if not close:
            return
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        if not linger:  # closed at once; what already arrived is read first (no reset for it)
            with contextlib.suppress(OSError):
                while conn.sock.recv(65536):
                    pass
            self.nr_conns -= 1
            conn.close()
            return
        self.lingering[conn] = time.monotonic() + _LINGER_S
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_lingering, conn))

    def _on_lingering(self, conn: TConn, client: socket.socket) -> None:
        try:
            if conn.sock.recv(256 * 1024):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_lingering(conn)  # the client closed too

    def _close_lingering(self, conn: TConn) -> None:
        self.lingering.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def _drop(self, conn: TConn) -> None:
        self._finish_intake(conn, self.intakes.get(conn))
        self.nr_conns -= 1
        conn.close()

    def _count_abandoned(self) -> None:
        if self.app.service is not None:
            self.app.service.metrics.requests.labels("499").inc()

    def _count_rejection(self, reason: str) -> None:
        service = self.app.service
        if service is not None:
            service.metrics.refused.labels(reason).inc()
        log.info("request refused before it was read whole: %s", reason)

    def murder_pending(self) -> None:
        """Called by the loop at least once a second: the intake's deadlines too. A stopping
        worker drops requests still being read (none of them was accepted)."""
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_sweep and self.alive:
            return
        self._next_sweep = now + _SWEEP_S
        for conn, intake in list(self.intakes.items()):
            if not self.alive:
                self._drop(conn)
            elif intake.check(now) is Verdict.REJECT:
                self._advance(conn, intake, Verdict.REJECT)
        for conn, until in list(self.lingering.items()):
            if until <= now or not self.alive:
                self._close_lingering(conn)

    def finish_request(self, conn: TConn, fs: Any) -> None:
        """After a request: bytes already read past it (a pipelined next request, in the
        loop's buffer or the parser's) start the next intake, deadlines and all; handed to
        the parser as they are, a partial head would hold a thread reading the socket."""
        unreader = getattr(conn.parser, "unreader", None)
        if isinstance(unreader, _ReplayUnreader):
            rest = unreader.take_buffered() + unreader.leftover()
            if rest:
                try:
                    keep = bool(fs.result()) and not fs.cancelled()
                except Exception:
                    keep = False
                if keep and self.alive:
                    self._start_intake(conn, rest)
                    return
        super().finish_request(conn, fs)
