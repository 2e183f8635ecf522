"""waitress (threads) around the app, with a clean drain on SIGTERM / SIGINT:

1. ``/readyz`` turns 503, and new transcription requests are answered 503 with Retry-After
   (the client retries on another pod while the endpoint is being removed);
2. every transcription request already accepted runs to completion (bounded by the drain
   timeout), and every response is written out;
3. the listening socket and connections close, the batcher stops, the process exits 0
   (1 when the drain timed out).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server

from kubescribe_runtime.app import create_app
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.service import Service

log = logging.getLogger(__name__)

_LOOP_TIMEOUT_S = 0.2


class Server:
    def __init__(self, config: ServeConfig, service: Service | None = None) -> None:
        self.config = config
        self.service = service or Service(config)
        self.app = create_app(self.service)
        server = create_server(
            self.app,
            host=config.host,
            port=config.port,
            threads=config.http_threads,
            ident="kubescribe",
            # Uploads are bounded by the app (413); keep waitress' own limit just above it.
            max_request_body_size=config.max_upload_bytes + 1024 * 1024,
            # ... and buffer bodies in memory: nothing is written to disk.
            inbuf_overflow=config.max_upload_bytes + 1024 * 1024,
            channel_timeout=max(120, int(config.request_timeout_s) + 30),
        )
        assert isinstance(server, BaseWSGIServer)
        self.wsgi = server
        self.port = int(server.effective_port)
        self._stop = threading.Event()
        self._draining = threading.Event()
        self.exit_code = 0

    # -- drain -------------------------------------------------------------------------------

    def _busy(self) -> bool:
        dispatcher = self.wsgi.task_dispatcher
        if self.service.in_flight or dispatcher.queue:
            return True
        return any(
            channel.requests or channel.request is not None
            for channel in list(self.wsgi.active_channels.values())
        )

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        quiet_checks = 0
        while time.monotonic() < deadline and quiet_checks < 3:
            quiet_checks = 0 if self._busy() else quiet_checks + 1
            self.service.wait_idle(max(0.0, min(0.05, deadline - time.monotonic())))
            time.sleep(0.05)
        if self._busy():
            log.warning("drain timeout: %d request(s) still running", self.service.in_flight)
            self.exit_code = 1
        else:
            log.info("drained: every accepted request completed")
        self._stop.set()

    def request_shutdown(
        self, signum: int = signal.SIGTERM, frame: FrameType | None = None
    ) -> None:
        """Signal handler (runs on the main thread, between two loop iterations)."""
        if self._draining.is_set():
            return
        self._draining.set()
        log.info("received %s: draining", signal.Signals(signum).name)
        self.service.begin_drain()
        threading.Thread(target=self._drain, name="kubescribe-drain", daemon=True).start()

    # -- run ---------------------------------------------------------------------------------

    def serve_forever(self, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_shutdown)
            signal.signal(signal.SIGINT, self.request_shutdown)
        self.service.load_in_background()
        log.info("listening on http://%s:%d", self.config.host, self.port)
        socket_map = self.wsgi._map
        while not self._stop.is_set():
            wasyncore.loop(timeout=_LOOP_TIMEOUT_S, map=socket_map, use_poll=True, count=1)
        # Flush responses still being written, then close everything.
        for _ in range(20):
            if not any(
                channel.total_outbufs_len for channel in list(self.wsgi.active_channels.values())
            ):
                break
            wasyncore.loop(timeout=0.05, map=socket_map, use_poll=True, count=1)
        self.wsgi.task_dispatcher.shutdown(timeout=5)
        wasyncore.close_all(socket_map)
        self.service.close()
        return self.exit_code
