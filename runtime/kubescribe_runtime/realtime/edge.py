"""The WebSocket edge of realtime sessions: ``GET /v1/realtime?intent=transcription``.

The route refuses what it cannot serve before the upgrade (no ``intent=transcription``, not a
WebSocket upgrade, model not ready, server draining: JSON errors as on every route; API keys
are checked before every request by :mod:`kubescribe_runtime.auth`). Past the upgrade, one
thread runs the session: frames go into the pure :class:`~.session.Session`, its events go out
as text frames, its decode requests go to the shared batcher on the session's live flow.

Bounds: ``--max-sessions`` (one more: an ``error`` event, then close 1013 with the reason),
``--session-idle-timeout``, ``--session-max-duration`` and ``--session-configure-timeout`` (no
``session.update`` yet) (an ``error`` event, then close 1000), ``--max-append-kb`` (larger: an
``error`` event; a frame over twice that: close 1009), ``--session-max-backlog-seconds`` (audio
received but not yet transcribed: past it an ``error`` event, at 1.5 times it a last one and
close 1008), a client that stops reading (a send blocked for :data:`SEND_TIMEOUT_S`: the
session ends).
On SIGTERM the open turn is committed, its ``completed`` event sent, then close 1001: the
client reconnects (to another replica). A client's own close ends the session quietly
(``client_closed``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from simple_websocket import ConnectionClosed

from kubescribe_runtime.errors import ApiError, error_response
from kubescribe_runtime.model_names import ModelNames
from kubescribe_runtime.realtime import secrets
from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.realtime.runner import (
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    SEND_TIMEOUT_S,
    SessionEnded,
    SessionRunner,
)
from kubescribe_runtime.realtime.session import Session, SessionLimits
from kubescribe_runtime.realtime.websocket import BoundedWebSocket, give_memory_back
from kubescribe_runtime.service import Service

log = logging.getLogger(__name__)

PARTIAL_WINDOW_S = 6.0


class SessionSlots:
    """Counts open sessions against ``--max-sessions``."""

    def __init__(self, limit: int, on_change: Callable[[int], None]) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()
        self._on_change = on_change

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            self._on_change(self._open)
            return True

    def give_back(self) -> None:
        with self._lock:
            self._open -= 1
            self._on_change(self._open)


class _WebSocketResponse(Response):
    """What the route returns once the socket was taken over: nothing more goes on the wire
    (gunicorn: the worker treats the connection as finished)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self._mode = mode

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self._mode == "gunicorn":
            raise StopIteration()
        if self._mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []


def register(app: Flask, service: Service, names: ModelNames) -> RealtimeMetrics:
    """Add the ``/v1/realtime`` routes (and the sessions' metrics) to ``app``."""
    secrets.register(app, service, names)  # POST /v1/realtime/client_secrets
    metrics = service.metrics.realtime
    config = service.config
    slots = SessionSlots(config.max_sessions, metrics.sessions_active.set)
    max_append = int(config.max_append_kb * 1024)
    limits = SessionLimits(
        max_append_bytes=max_append,
        partial_interval_s=config.partial_interval_ms / 1000,
        partial_window_s=min(PARTIAL_WINDOW_S, config.window_seconds),
        max_turn_s=config.max_turn_seconds,
    )

    @app.get("/v1/realtime", endpoint="realtime_http")
    def realtime_http() -> Response:
        return error_response(
            ApiError(
                400,
                "expected a WebSocket upgrade request (ws://…/v1/realtime?intent=transcription)",
                "websocket_required",
            )
        )

    @app.get("/v1/realtime", websocket=True)
    def realtime() -> Response:
        intent = request.args.get("intent", "")
        if intent != "transcription":
            return error_response(
                ApiError(
                    400,
                    f"this server serves realtime transcription sessions only: connect to "
                    f"/v1/realtime?intent=transcription (got intent={intent!r})",
                    "unsupported_intent",
                )
            )
        # ?model= (what realtime.connect(model=...) sends): another model's is refused
        # before the upgrade, with OpenAI's 404.
        names.check(request.args.get("model"))
        with service.session():  # refused (503) unless ready; the drain waits for it
            manifest = service.manifest()
            ws = BoundedWebSocket(request.environ, max_message_size=2 * max_append + 64 * 1024)
            ws.set_send_timeout(SEND_TIMEOUT_S)
            session = Session(
                uuid.uuid4().hex[:12],
                manifest.name,
                list(manifest.languages),
                manifest.sample_rate,
                limits,
                served_names=names.served,
            )
            if not slots.take():
                reason = (
                    f"too many sessions: this server holds at most {config.max_sessions}; "
                    "retry later or on another replica"
                )
                with contextlib.suppress(ConnectionClosed, OSError):
                    ws.send(session.error_event("session_limit_reached", reason).render())
                ws.finish(CLOSE_TRY_AGAIN_LATER, reason)
                metrics.sessions.labels("refused").inc()
                return _WebSocketResponse(ws.mode)
            decoder = service.session_decoder()
            runner = SessionRunner(ws, session, decoder, service, metrics)
            why = "error"
            try:
                runner.run()
            except SessionEnded as end:
                why = end.why
                if end.abort:
                    ws.abort()
                else:
                    ws.finish(end.code, end.reason)
            except ConnectionClosed:
                why = "client_closed"
                ws.finish(CLOSE_NORMAL, "")
            except Exception:
                log.exception("realtime session %s failed", session.id)
                ws.finish(1011, "internal error")
            finally:
                runner.close()
                slots.give_back()
                metrics.sessions.labels(why).inc()
                del runner, session, decoder
                give_memory_back()
        return _WebSocketResponse(ws.mode)

    return metrics
