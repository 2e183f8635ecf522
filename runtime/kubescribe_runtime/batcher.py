"""Dynamic batching: one worker thread groups queued jobs into batches for the model.

A batch closes when it holds ``max_batch_size`` jobs, ``max_delay_s`` after its oldest job
arrived, or — with ``close_when_idle`` — as soon as no caller is still preparing a job
(:meth:`DynamicBatcher.producing`): then no batch-mate can come, and waiting would only add
latency to a lone request. When more jobs wait than fit, the batch is the run of
``max_batch_size`` jobs of similar length (sorted by length) that contains the oldest job:
little padding, no starvation.
The queue is bounded: :class:`QueueFull` tells the caller to answer 429 with Retry-After.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kubescribe.errors import KubescribeError

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(KubescribeError):
    """The bounded queue is full: try again later."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BatcherClosed(KubescribeError):
    """The batcher no longer takes jobs (the server is shutting down)."""


@dataclass
class _Job(Generic[In, Out]):
    payload: In
    length: int
    enqueued: float
    future: Future[Out] = field(default_factory=Future)


def choose_batch(lengths: Sequence[int], max_batch_size: int) -> list[int]:
    """Indices (into ``lengths``, in queue order, index 0 the oldest) of the next batch."""
    if len(lengths) <= max_batch_size:
        return list(range(len(lengths)))
    by_length = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    oldest_rank = by_length.index(0)
    best_start, best_spread = 0, None
    first = max(0, oldest_rank - max_batch_size + 1)
    last = min(oldest_rank, len(lengths) - max_batch_size)
    for start in range(first, last + 1):
        run = by_length[start : start + max_batch_size]
        spread = lengths[run[-1]] - lengths[run[0]]
        if best_spread is None or spread < best_spread:
            best_start, best_spread = start, spread
    return sorted(by_length[best_start : best_start + max_batch_size])


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[list[In]], list[Out]],
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        retry_after_s: int = 1,
        close_when_idle: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._retry_after_s = retry_after_s
        self.close_when_idle = close_when_idle
        self._producers = 0
        self._queue: list[_Job[In, Out]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="kubescribe-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, payload: In, length: int) -> Future[Out]:
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(
                    f"the request queue is full ({self.max_queue} queued); retry later",
                    self._retry_after_s,
                )
            job: _Job[In, Out] = _Job(payload, length, time.monotonic())
            self._queue.append(job)
            self._on_queue_depth(len(self._queue))
            self._cond.notify()
            return job.future

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        """Mark a caller that is preparing a job (decoding audio, computing features).

        While any caller is, a batch that is neither full nor due waits for it; once none is
        (and ``close_when_idle``), the batch closes at once.
        """
        with self._cond:
            self._producers += 1
        try:
            yield
        finally:
            with self._cond:
                self._producers -= 1
                self._cond.notify()

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _next_batch(self) -> list[_Job[In, Out]] | None:
        with self._cond:
            while True:
                # Cancelled jobs (their request timed out) are dropped unseen.
                self._queue = [j for j in self._queue if not j.future.cancelled()]
                if self._queue:
                    deadline = self._queue[0].enqueued + self.max_delay_s
                    full = len(self._queue) >= self.max_batch_size
                    remaining = deadline - time.monotonic()
                    nobody_coming = self.close_when_idle and self._producers == 0
                    if full or remaining <= 0 or self._closed or nobody_coming:
                        break
                    self._cond.wait(remaining)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()
            chosen = choose_batch([j.length for j in self._queue], self.max_batch_size)
            batch = [self._queue[i] for i in chosen]
            picked = set(chosen)
            self._queue = [j for i, j in enumerate(self._queue) if i not in picked]
            self._on_queue_depth(len(self._queue))
        return [j for j in batch if j.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            batch.sort(key=lambda j: j.length)
            self._on_batch(len(batch))
            try:
                results = self._run_batch([j.payload for j in batch])
            except Exception as exc:  # handed to every waiting request
                log.exception("batch of %d failed", len(batch))
                for job in batch:
                    job.future.set_exception(exc)
                continue
            for job, result in zip(batch, results, strict=True):
                job.future.set_result(result)
