"""Admission: a transcription request is admitted or refused once, before any work is done;
an admitted request is never refused later.

Two bounds on admitted work, checked in two steps of one request:

1. :meth:`Admission.enter`, before the body is read: at most ``max_requests`` requests are
   admitted at once (so at most that many upload bodies are held at once);
2. :meth:`Ticket.admit_audio`, once the audio's header is read (its declared duration): the
   audio seconds admitted and not yet transcribed (the *backlog*) stay within
   ``max_backlog_s``. A request longer than the whole bound is still admitted when nothing else
   waits, so that no file is refused forever. Requests longer than ``short_s`` may fill only
   ``1 - SHORT_RESERVE`` of the bound: the rest is kept for short ones, which the fair
   scheduler serves within about one batch however long the backlog is, so that long files
   alone never get a short clip refused.

A refusal (:class:`Refused`, HTTP 429) carries ``Retry-After``: the time the current backlog
takes at the measured processing rate (audio seconds transcribed per second, a moving average),
within ``[1, 60]`` seconds. Windows are never refused: the batcher makes an admitted request's
windows wait for room instead (see :mod:`kubescribe_runtime.batcher`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kubescribe.errors import KubescribeError

# The share of the backlog bound that only requests of at most ``short_s`` may use.
SHORT_RESERVE = 0.1
# Before anything was measured, the backlog is assumed to be transcribed at this rate.
PRIOR_RATE = 20.0  # audio seconds per second
RETRY_AFTER_RANGE = (1, 60)
_RATE_WEIGHT = 0.2  # weight of the newest rate sample in the moving average


class Refused(KubescribeError):
    """Not admitted: too many requests or too much audio admitted already."""

    def __init__(self, message: str, reason: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.reason = reason  # "requests" or "backlog"
        self.retry_after_s = retry_after_s


@dataclass
class _Counts:
    requests: int = 0
    backlog_s: float = 0.0


class Ticket:
    """One admitted request: its slot and its share of the backlog; a context manager."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.audio_s = 0.0  # admitted audio
        self.done_s = 0.0  # transcribed so far
        self._closed = False

    def admit_audio(self, seconds: float) -> None:
        self._admission._admit_audio(self, seconds)

    def progress(self, done_s: float) -> None:
        """The audio transcribed so far (cumulative, seconds)."""
        self._admission._progress(self, done_s)

    def close(self) -> None:
        self._admission._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Admission:
    def __init__(
        self,
        max_requests: int,
        max_backlog_s: float,
        clock: Callable[[], float] = time.monotonic,
        short_s: float = 30.0,
    ) -> None:
        self.max_requests = max_requests
        self.max_backlog_s = max_backlog_s
        self.short_s = short_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = _Counts()
        self._rate = PRIOR_RATE
        self._rate_mark: tuple[float, float] | None = None  # (time, total done) of last sample
        self._total_done = 0.0
        self.refused: dict[str, int] = {"requests": 0, "backlog": 0}

    @property
    def requests(self) -> int:
        return self._counts.requests

    @property
    def backlog_s(self) -> float:
        return self._counts.backlog_s

    @property
    def rate(self) -> float:
        """Measured audio seconds transcribed per second (moving average)."""
        return self._rate

    def retry_after_s(self) -> int:
        low, high = RETRY_AFTER_RANGE
        return int(min(high, max(low, math.ceil(self._counts.backlog_s / self._rate))))

    def enter(self) -> Ticket:
        with self._lock:
            if self._counts.requests >= self.max_requests:
                self.refused["requests"] += 1
                raise Refused(
                    f"the server is at its limit of {self.max_requests} concurrent requests; "
                    "retry later",
                    "requests",
                    self.retry_after_s(),
                )
            self._counts.requests += 1
        return Ticket(self)

    def _admit_audio(self, ticket: Ticket, seconds: float) -> None:
        with self._lock:
            backlog = self._counts.backlog_s
            bound = self.max_backlog_s * (1 if seconds <= self.short_s else 1 - SHORT_RESERVE)
            if backlog > 0 and backlog + seconds > bound:
                self.refused["backlog"] += 1
                raise Refused(
                    f"{backlog:.0f} s of audio are waiting (limit {self.max_backlog_s:g} s); "
                    "retry later",
                    "backlog",
                    self.retry_after_s(),
                )
            ticket.audio_s += seconds
            self._counts.backlog_s += seconds

    def _progress(self, ticket: Ticket, done_s: float) -> None:
        with self._lock:
            step = min(max(0.0, done_s - ticket.done_s), ticket.audio_s - ticket.done_s)
            if step <= 0:
                return
            ticket.done_s += step
            self._counts.backlog_s = max(0.0, self._counts.backlog_s - step)
            self._total_done += step
            self._sample_rate()

    def _sample_rate(self) -> None:
        now = self._clock()
        if self._rate_mark is None:
            self._rate_mark = (now, self._total_done)
            return
        then, done_then = self._rate_mark
        if now - then < 1.0:  # one sample per second at most
            return
        if now - then > 5.0:  # an idle gap says nothing about the rate: start again
            self._rate_mark = (now, self._total_done)
            return
        sample = (self._total_done - done_then) / (now - then)
        self._rate = max(1e-3, (1 - _RATE_WEIGHT) * self._rate + _RATE_WEIGHT * sample)
        self._rate_mark = (now, self._total_done)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket._closed:
                return
            ticket._closed = True
            self._counts.requests -= 1
            left = ticket.audio_s - ticket.done_s
            self._counts.backlog_s = max(0.0, self._counts.backlog_s - left)
