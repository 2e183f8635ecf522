"""The HTTP and WebSocket server: gunicorn, one worker process with an event loop in front of a
pool of threads (gthread), embedded through :class:`gunicorn.app.base.BaseApplication`.

One worker process holds the one loaded model. Its event loop (one thread, non-blocking
sockets) accepts connections and reads each request whole — the head within
``--header-timeout``, the body at ``--body-min-rate`` at least, buffered in memory then in
``--scratch-dir`` (:mod:`kubescribe_runtime.intake`) — and only then hands it to a thread of
the pool, which runs the Flask app: plain HTTP routes and WebSocket routes (flask-sock /
simple-websocket take over the connection of an ``Upgrade: websocket`` request). A client too
slow gets 408 from the loop; it never held a thread nor an admission slot. The loop answers
``/healthz`` and ``/readyz`` itself, so however many clients trickle bytes or wait on the
model, probes are answered at once. A WebSocket session holds one thread for its lifetime, so
``--http-threads`` bounds requests being served and sessions together; ``--max-connections``
bounds open connections (slow ones included). The gunicorn master only supervises: it binds
the socket, forks the worker (which loads the model after the fork), forwards signals and
restarts a worker that died.

Drain on SIGTERM / SIGINT (the master forwards SIGTERM to the worker):

1. ``/readyz`` turns 503, and new transcription requests are answered 503 with Retry-After
   (the client retries on another pod while the endpoint is being removed); the worker keeps
   listening meanwhile, so nobody meets a refused connection;
2. every request already admitted runs to completion (bounded by ``--drain-timeout``), and
   every response is written out;
3. the worker stops listening, closes its connections and the batcher, and exits; the master
   exits 0 (1 when the drain timed out). The master waits ``--drain-timeout`` plus a margin
   before it kills a worker that is still draining.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import selectors
import signal
import socket
import sys
import threading
import time
from functools import partial
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from gunicorn import http
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from kubescribe_runtime import probes
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.intake import Intake, IntakeLimits, Verdict

if TYPE_CHECKING:  # the master process never imports onnxruntime (see Application.load)
    from flask import Flask

    from kubescribe_runtime.service import Service

log = logging.getLogger(__name__)

# What the master adds to --drain-timeout before it kills a draining worker: the worker's own
# linger for kept-alive connections (2 s in gunicorn) and the flush of the last responses.
STOP_MARGIN_S = 10.0
# The drain ends once nothing was in flight at this many consecutive checks, 50 ms apart.
_QUIET_CHECKS = 3
# How often the event loop checks the intake's deadlines (408 comes this much late at most).
_SWEEP_S = 0.25
# How long a connection answered by the loop (a probe, a refusal) drains what its client still
# sends before it closes.
_LINGER_S = 2.0


def _heartbeat_dir() -> str | None:
    """Where gunicorn's worker heartbeat file lives: a tmpfs (the root file system is read-only
    in the pod, and a heartbeat on disk can stall on I/O), else the temporary directory."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


class _RootLogger(Logger):
    """gunicorn's messages go through the root logger (our text or JSON format), not its own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for name in ("gunicorn.error", "gunicorn.access"):
            logger = logging.getLogger(name)
            logger.handlers[:] = []
            logger.propagate = True
        self.error_log.setLevel(logging.getLogger().level)


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
        if not linger:
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


class DrainingWorker(IntakeWorker):
    """The intake worker, with kubescribe's drain in front of gunicorn's graceful stop."""

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGINT, self.handle_exit)  # Ctrl-C drains too
        signal.siginterrupt(signal.SIGINT, False)
        self._drain_started = False
        self.drain_timed_out = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started:
            return
        self._drain_started = True
        threading.Thread(target=self._drain, name="kubescribe-drain", daemon=True).start()

    def _drain(self) -> None:
        service = self.app.service
        if service is None:  # stopped before the app was even loaded: nothing to drain
            super().handle_exit(signal.SIGTERM, None)
            return
        log.info("received SIGTERM: draining")
        service.begin_drain()
        deadline = time.monotonic() + service.config.drain_timeout_s
        quiet = 0
        while quiet < _QUIET_CHECKS and time.monotonic() < deadline:
            quiet = 0 if service.in_flight else quiet + 1
            service.wait_idle(max(0.0, min(0.05, deadline - time.monotonic())))
            time.sleep(0.05)
        if service.in_flight:
            log.warning("drain timeout: %d request(s) still running", service.in_flight)
            self.drain_timed_out = True
        else:
            log.info("drained: every accepted request completed")
        super().handle_exit(signal.SIGTERM, None)  # gunicorn's graceful stop from here

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.app.service is not None:
                self.app.service.close()
        if self.drain_timed_out:
            sys.exit(1)


class _Arbiter(Arbiter):
    """The master: SIGINT drains like SIGTERM; it exits with the draining worker's status."""

    _stopping = False
    _worker_status = 0

    def handle_term(self) -> None:
        self._stopping = True
        raise StopIteration

    handle_int = handle_term

    def reap_workers(self) -> None:
        if self._stopping:
            for pid in list(self.WORKERS):
                try:
                    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    continue
                if info is not None and info.si_code == os.CLD_EXITED and info.si_status:
                    self._worker_status = int(info.si_status)
        super().reap_workers()

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        try:
            super().halt(reason, exit_status)
        except SystemExit as done:
            raise SystemExit(done.code or self._worker_status) from None


class Application(BaseApplication):
    """The embedded gunicorn application: settings from :class:`ServeConfig` only."""

    def __init__(self, config: ServeConfig, service: Service | None = None) -> None:
        self.config = config
        self.service: Service | None = service
        super().__init__()

    def load_config(self) -> None:
        c = self.config
        settings: dict[str, Any] = {
            "bind": [f"{c.host}:{c.port}"],
            "workers": 1,
            "worker_class": DrainingWorker,
            "threads": c.http_threads,
            # The intake keeps open connections at --max-connections by evicting the slowest
            # (IntakeWorker.accept); gthread's own gate, which stops accepting (probes would
            # wait in the backlog), stays above it.
            "worker_connections": c.max_connections + c.http_threads + 64,
            "graceful_timeout": math.ceil(c.drain_timeout_s + STOP_MARGIN_S),
            # The worker's main loop (not a request) silent this long is restarted; the clock
            # runs from the fork, so it must cover importing onnxruntime (CUDA libraries from a
            # slow image layer) too. A wedged model is /healthz's business, not this.
            "timeout": 300,
            "keepalive": 5,
            "logger_class": _RootLogger,
            "loglevel": c.log_level,
            "errorlog": "-",
            "accesslog": None,
            "control_socket_disable": True,
            "worker_tmp_dir": _heartbeat_dir(),
            "proc_name": "kubescribe",
        }
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Runs in the worker, after the fork: the model is loaded there, in the background.

        Nothing that imports onnxruntime is imported before the fork: its runtime state does not
        survive a fork (the worker aborts at exit, "std::system_error: Invalid argument").
        """
        from kubescribe_runtime.app import create_app
        from kubescribe_runtime.service import Service

        if self.service is None:
            self.service = Service(self.config)
        self.service.load_in_background()
        return create_app(self.service)

    def run(self) -> None:
        _Arbiter(self).run()


class Server:
    def __init__(self, config: ServeConfig, service: Service | None = None) -> None:
        self.config = config
        self.application = Application(config, service)

    def serve_forever(self) -> int:
        log.info("listening on http://%s:%d", self.config.host, self.config.port)
        try:
            self.application.run()
        except SystemExit as done:
            return int(done.code or 0)
        return 0
