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
received but not yet transcribed: past it an ``error`` event, and the session stops reading
until its decodes bring the backlog under half of it, so TCP pushes back on the client), a
client that stops reading (a send blocked for :data:`SEND_TIMEOUT_S`: the session ends).
On SIGTERM the open turn is committed, its ``completed`` event sent, then close 1001: the
client reconnects (to another replica). A client's own close ends the session quietly
(``client_closed``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from flask import Flask, Response, jsonify, request
from simple_websocket import ConnectionClosed

from kubescribe.errors import KubescribeError
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime import secrets
from kubescribe_runtime.realtime.decode import PendingDecode, SessionDecoder
from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.realtime.session import (
    DecodeRequest,
    DeltaTiming,
    Output,
    Session,
    SessionLimits,
)
from kubescribe_runtime.realtime.websocket import BoundedWebSocket
from kubescribe_runtime.service import NotReady, Service, State

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
PARTIAL_WINDOW_S = 6.0
_POLL_BUSY_S = 0.01  # while decodes are pending
_POLL_IDLE_S = 0.05

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013


class SessionEnded(KubescribeError):
    """The session ends on the server's side: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, why: str, abort: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.why = why  # the metrics label
        self.abort = abort  # drop the connection: a close frame could not be sent either


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


class _Arrivals:
    """When (wall clock) the stream reached each point (audio time): for partial latency."""

    def __init__(self) -> None:
        self._marks: deque[tuple[float, float]] = deque()

    def mark(self, stream_s: float, wall: float) -> None:
        self._marks.append((stream_s, wall))
        while len(self._marks) > 2000:
            self._marks.popleft()

    def wall_at(self, stream_s: float) -> float | None:
        for reached, wall in self._marks:
            if reached >= stream_s:
                return wall
        return None


class SessionRunner:
    """Runs one accepted session until it ends; every exit path closes the socket once."""

    def __init__(
        self,
        ws: Any,  # a BoundedWebSocket (receive, send)
        session: Session,
        decoder: SessionDecoder,
        service: Service,
        metrics: RealtimeMetrics,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ws = ws
        self.session = session
        self.decoder = decoder
        self.service = service
        self.metrics = metrics
        self.clock = clock
        self.sleep = sleep
        self.pending: list[PendingDecode] = []
        self.arrivals = _Arrivals()
        config = service.config
        self.idle_s = config.session_idle_timeout_s
        self.max_s = config.session_max_duration_s
        self.configure_s = config.session_configure_timeout_s
        self.max_backlog_s = config.session_max_backlog_seconds
        self.draining = False
        self.paused = False  # the audio backlog is full: no event is read
        self.started = self.last_event = 0.0

    # -- output ----------------------------------------------------------------------------

    def _send(self, event: ev.ServerEvent) -> None:
        started = self.clock()
        try:
            self.ws.send(event.render())
        except ConnectionClosed:
            raise
        except OSError as exc:  # nothing could be sent for SEND_TIMEOUT_S
            raise SessionEnded(
                CLOSE_GOING_AWAY, "the client does not read its events", "slow_client", abort=True
            ) from exc
        if self.clock() - started >= 0.8 * SEND_TIMEOUT_S:
            # A send that timed out part-way returns what it wrote: the frame is cut, the
            # stream is unusable.
            raise SessionEnded(
                CLOSE_GOING_AWAY, "the client does not read its events", "slow_client", abort=True
            )
        if isinstance(event, ev.Error):
            self.metrics.errors.inc()
        elif isinstance(event, ev.SpeechStarted):
            self.metrics.vad_events.labels("speech_started").inc()
        elif isinstance(event, ev.SpeechStopped):
            self.metrics.vad_events.labels("speech_stopped").inc()
        elif isinstance(event, ev.Committed):
            self.metrics.turns.inc()

    def _apply(self, outputs: Iterable[Output]) -> None:
        for output in outputs:
            if isinstance(output, DecodeRequest):
                self._submit(output)
            elif isinstance(output, DeltaTiming):
                now = self.clock()
                for end in output.word_ends_s:
                    arrived = self.arrivals.wall_at(end)
                    if arrived is not None:
                        self.metrics.partial_latency.observe(max(0.0, now - arrived))
            else:
                self._send(output)

    def _submit(self, request_: DecodeRequest) -> None:
        try:
            self.pending.append(self.decoder.submit(request_))
        except KubescribeError as exc:  # the batcher is closing
            self._apply(self.session.decode_failed(request_, str(exc)))

    def _collect(self) -> None:
        # One pass: each decode is asked once whether it is done. (Two passes dropped one that
        # finished between them, and every later final of the session waited on it forever.)
        done: list[PendingDecode] = []
        waiting: list[PendingDecode] = []
        for pending in self.pending:
            (done if pending.done() else waiting).append(pending)
        if not done:
            return
        self.pending = waiting
        for pending in done:
            try:
                words = self.decoder.words(pending)
            except Exception as exc:
                log.warning("realtime decode failed: %s", exc)
                self._apply(self.session.decode_failed(pending.request, "the decode failed"))
                continue
            self._apply(self.session.decoded(pending.request, words))

    # -- input -----------------------------------------------------------------------------

    def _receive(self, message: str | bytes) -> None:
        if self.draining:
            return  # shutting down: the open turn was committed; later audio is not taken
        if isinstance(message, bytes):
            self._apply(self.session.receive_binary())
            return
        before = self.session.audio_seconds
        outputs = self.session.receive_text(message)
        if self.session.audio_seconds > before:
            self.metrics.audio_seconds.inc(self.session.audio_seconds - before)
            self.arrivals.mark(self.session.stream_s, self.clock())
        self._apply(outputs)

    # -- the backlog ---------------------------------------------------------------------------

    @property
    def backlog_s(self) -> float:
        """Audio received and not yet transcribed: the session's buffer and what its pending
        decodes hold."""
        pending = sum(len(p.request.samples) for p in self.pending)
        return self.session.buffered_s + pending / self.session.rate

    def _check_backlog(self) -> None:
        backlog = self.backlog_s
        if self.paused:  # read again at half the cap (or when no decode is left to wait for)
            self.paused = bool(self.pending) and backlog > self.max_backlog_s / 2
            return
        if backlog <= self.max_backlog_s:
            return
        message = (
            f"the session holds {backlog:.1f} s of audio not yet transcribed (at most "
            f"{self.max_backlog_s:g} s): send audio at real-time pace; no event is read until "
            "the backlog is transcribed"
        )
        if not self.pending:  # nothing in flight could bring it down
            self._end_with_error("input_audio_buffer_backlog", message, CLOSE_POLICY, "backlog")
        self._send(self.session.error_event("input_audio_buffer_backlog", message))
        self.paused = True

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> NoReturn:
        """Serve until the session ends (:class:`SessionEnded` or the client's close)."""
        self.start()
        while True:
            self.step()

    def start(self) -> None:
        self.started = self.last_event = self.clock()
        self._apply(self.session.start())

    def step(self) -> None:
        """One turn of the loop: the session's bounds, one client event (unless the backlog
        is full), the decodes that finished."""
        now = self.clock()
        if not self.session.configured and now - self.started > self.configure_s:
            self._end_with_error(
                "session_not_configured",
                f"no session.update in the first {self.configure_s:g} s; closing the session",
                CLOSE_NORMAL,
                "unconfigured",
            )
        if self.service.state is State.DRAINING and not self.draining:
            self.draining = True
            self._apply(self.session.drain())
        if self.draining and not self.pending and not self.session.pending_finals:
            raise SessionEnded(
                CLOSE_GOING_AWAY, "the server is shutting down; reconnect to continue", "draining"
            )
        if now - self.last_event > self.idle_s:
            self._end_with_error(
                "session_idle_timeout",
                f"no client event for {self.idle_s:g} s; closing the session",
                CLOSE_NORMAL,
                "idle",
            )
        if now - self.started > self.max_s and not self.draining:
            self._end_with_error(
                "session_expired",
                f"the session reached its maximum duration of {self.max_s:g} s; reconnect "
                "to continue",
                CLOSE_NORMAL,
                "expired",
            )
        self._check_backlog()
        if self.paused:  # not idle: this side stopped reading
            self.sleep(_POLL_BUSY_S)  # (as a receive would wait)
            self.last_event = self.clock()
        else:
            message = self.ws.receive(timeout=_POLL_BUSY_S if self.pending else _POLL_IDLE_S)
            if message is not None:
                self.last_event = self.clock()
                self._receive(message)
        self._collect()

    def _end_with_error(self, code: str, message: str, close: int, why: str) -> NoReturn:
        self._send(self.session.error_event(code, message))
        raise SessionEnded(close, message[:120], why)

    def close(self) -> None:
        for pending in self.pending:
            pending.cancel()
        self.decoder.close()


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


def _refuse(status: int, message: str, code: str) -> Response:
    response = jsonify(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    )
    response.status_code = status
    return response


def register(app: Flask, service: Service) -> RealtimeMetrics:
    """Add the ``/v1/realtime`` routes (and the sessions' metrics) to ``app``."""
    secrets.register(app, service)  # POST /v1/realtime/client_secrets
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
        return _refuse(
            400,
            "expected a WebSocket upgrade request (ws://…/v1/realtime?intent=transcription)",
            "websocket_required",
        )

    @app.get("/v1/realtime", websocket=True)
    def realtime() -> Response:
        intent = request.args.get("intent", "")
        if intent != "transcription":
            return _refuse(
                400,
                f"this server serves realtime transcription sessions only: connect to "
                f"/v1/realtime?intent=transcription (got intent={intent!r})",
                "unsupported_intent",
            )
        transcriber = service.transcriber
        if transcriber is None:
            raise NotReady(f"the model is not ready: {service.reason}")
        with service.session():  # refused (503) unless ready; the drain waits for it
            ws = BoundedWebSocket(request.environ, max_message_size=2 * max_append + 64 * 1024)
            ws.set_send_timeout(SEND_TIMEOUT_S)
            manifest = transcriber.manifest
            session = Session(
                uuid.uuid4().hex[:12],
                manifest.name,
                list(manifest.languages),
                manifest.sample_rate,
                limits,
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
            decoder = SessionDecoder(
                transcriber.model,
                transcriber.batcher,
                config.window_seconds,
                config.window_overlap_seconds,
                transcriber.settings.vad,  # a final decode crops as the file path does
            )
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
        return _WebSocketResponse(ws.mode)

    return metrics
