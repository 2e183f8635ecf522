"""The HTTP and WebSocket server: gunicorn, one worker process with an event loop in front of a
pool of threads (gthread), embedded through :class:`gunicorn.app.base.BaseApplication`.

One worker process holds the one loaded model. Its event loop (one thread, non-blocking
sockets) accepts connections and reads each request whole — the head within
``--header-timeout``, the body at ``--body-min-rate`` at least, buffered in memory then in
``--scratch-dir`` (:mod:`.worker`, :mod:`.intake`) — and only then hands it to a thread of
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

import logging
import math
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.worker import IntakeWorker

if TYPE_CHECKING:  # the master process never imports onnxruntime (see Application.load)
    from flask import Flask

    from kubescribe_runtime.service import Service

log = logging.getLogger(__name__)

# What the master adds to --drain-timeout before it kills a draining worker: the worker's own
# linger for kept-alive connections (2 s in gunicorn) and the flush of the last responses.
STOP_MARGIN_S = 10.0
# The drain ends once nothing was in flight at this many consecutive checks, 50 ms apart.
_QUIET_CHECKS = 3


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
