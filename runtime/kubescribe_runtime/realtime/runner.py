"""One realtime session's loop: client events into the pure :class:`~.session.Session`, its
events out to the socket, its decode requests to the shared batcher; the session's bounds (idle,
configure deadline, maximum duration, audio backlog, drain) enforced on the way.

Decodes finish on the batcher's threads; the loop collects them in one pass (each pending decode
is asked once whether it is done), so none can be missed, and the session sends finals in
commit order. Past ``--session-max-backlog-seconds`` of audio not yet transcribed the client
gets an ``error`` event (once, until the backlog is back under the bound); a client that goes
on to :data:`CLOSE_AT` times the bound is closed (1008) with a last ``error``. The loop keeps
reading all along: a client's keepalive pings are answered, and the WebSocket's bounded inbox
(:mod:`.websocket`) holds what it has not taken yet.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from simple_websocket import ConnectionClosed

from kubescribe.errors import KubescribeError
from kubescribe_runtime.realtime import events as ev
from kubescribe_runtime.realtime.decode import PendingDecode, SessionDecoder
from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.realtime.session import DecodeRequest, DeltaTiming, Output, Session
from kubescribe_runtime.service import Service, State

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
_POLL_BUSY_S = 0.01  # while decodes are pending
_POLL_IDLE_S = 0.05
# A backlog this many times --session-max-backlog-seconds closes the session. (Not reading
# instead, so that TCP pushes back, would stall the client's keepalive pings behind its own
# queued audio: OpenAI's client gives up on a pong after 20 s.)
CLOSE_AT = 1.5

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
    ) -> None:
        self.ws = ws
        self.session = session
        self.decoder = decoder
        self.service = service
        self.metrics = metrics
        self.clock = clock
        self.pending: list[PendingDecode] = []
        self.arrivals = _Arrivals()
        config = service.config
        self.idle_s = config.session_idle_timeout_s
        self.max_s = config.session_max_duration_s
        self.configure_s = config.session_configure_timeout_s
        self.max_backlog_s = config.session_max_backlog_seconds
        self.draining = False
        self.warned = False  # the client was told its backlog passed the bound
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
        # (A partial decode copies at most its window of the open turn: not counted again.)
        pending = sum(len(p.request.samples) for p in self.pending if p.request.kind == "final")
        return self.session.buffered_s + pending / self.session.rate

    def _check_backlog(self) -> None:
        backlog = self.backlog_s
        if backlog <= self.max_backlog_s:
            self.warned = False
            return
        held = f"the session holds {backlog:.1f} s of audio not yet transcribed"
        finals = any(p.request.kind == "final" for p in self.pending)
        if backlog > CLOSE_AT * self.max_backlog_s or not finals:  # (none: it cannot go down)
            self._end_with_error(
                "input_audio_buffer_backlog",
                f"{held}: the audio comes much faster than real time; closing the session",
                CLOSE_POLICY,
                "backlog",
            )
        if not self.warned:
            self.warned = True
            self._send(
                self.session.error_event(
                    "input_audio_buffer_backlog",
                    f"{held} (at most {self.max_backlog_s:g} s): send audio at real-time pace; "
                    f"at {CLOSE_AT * self.max_backlog_s:g} s the session is closed",
                )
            )

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
        message = self.ws.receive(timeout=_POLL_BUSY_S if self.pending else _POLL_IDLE_S)
        if message is not None:
            self.last_event = self.clock()
            self._receive(message)
        self._collect()
        self._check_backlog()

    def _end_with_error(self, code: str, message: str, close: int, why: str) -> NoReturn:
        self._send(self.session.error_event(code, message))
        raise SessionEnded(close, message[:120], why)

    def close(self) -> None:
        for pending in self.pending:
            pending.cancel()
        self.decoder.close()
