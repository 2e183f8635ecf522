"""Dynamic batching: one worker thread runs the model on batches of queued windows.

API (file requests and real-time sessions alike)::

    with batcher.open_flow(Priority.FILE) as flow:  # one per request or session
        future = flow.submit(features, length)        # waits while the queue is full
        logprobs = future.result()
    # leaving the block (or flow.cancel()) drops the flow's queued windows

- A flow's :class:`~kubescribe_runtime.scheduling.Priority`: a real-time session's windows
  (``LIVE``) go first, then a short request's (``SHORT``), then long files' (``FILE``); while a
  session is open batches hold at most ``live_budget`` units (a running batch is never
  interrupted: small ones bound a live window's wait); within a class, windows are scheduled
  fairly across flows on audio length (:mod:`kubescribe_runtime.scheduling`), and a batch
  holds only similar lengths.
- :meth:`Flow.submit` never refuses for lack of space: when ``max_queue`` windows are queued
  it waits (a live flow does not wait: its windows are few and must not queue behind files).
  It raises :class:`FlowCancelled` once the flow was cancelled (the client hung up) and
  :class:`BatcherClosed` once the server stops. Admission happens earlier, per request
  (:mod:`kubescribe_runtime.admission`), so an admitted request is never refused here.
- :meth:`DynamicBatcher.submit` is a one-window flow (tests, warm-ups).

A batch closes when ``max_batch_size`` windows wait, ``max_delay_s`` after the oldest arrived,
or — with ``close_when_idle`` — as soon as no caller is still preparing a window
(:meth:`DynamicBatcher.producing`): then no batch-mate can come, and waiting would only add
latency to a lone request.

CPU reserve (``file_slots``): preparing a window (decoding the audio, the VAD, features) costs
more CPU than the model on it, and runs in the request's own thread. With ``file_slots`` set, at
most that many file requests prepare a window at once, and a file request does not start one
while urgent (live or short) work is being prepared, queued or run — for at most
``file_yield_s`` per window, so files keep progressing (see
:func:`~kubescribe_runtime.scheduling.file_may_prepare`). Live and short work thus competes
for the cores with one file thread at most instead of every file request's.

Urgent lane (``urgent_lane``): a second worker thread runs batches of live and short windows
only (at most ``live_budget`` units each), beside the first (which takes any work, urgent
first). A running file batch is never
interrupted, but a live window no longer waits for it: the two batches share the cores (the
model's session runs concurrent calls) until the file batch ends.

Liveness: :meth:`DynamicBatcher.stalled_s` is how long work has been waiting without a batch
finishing (0 when idle or progressing); ``/healthz`` fails when it passes a threshold.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

from kubescribe.errors import KubescribeError
from kubescribe_runtime.scheduling import (
    DEFAULT_LENGTH_RATIO,
    FlowState,
    Priority,
    Scheduler,
    file_may_prepare,
)

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosed(KubescribeError):
    """The batcher no longer takes windows (the server is shutting down)."""


class FlowCancelled(KubescribeError):
    """The flow was cancelled (its client hung up or timed out): no more windows."""


class Flow(Generic[In, Out]):
    """A request's (or session's) handle on the batcher; see the module docstring."""

    def __init__(self, batcher: DynamicBatcher[In, Out], priority: Priority, counted: bool) -> None:
        self._batcher = batcher
        self.state = FlowState(priority)
        self.cancelled = False
        self.counted = counted  # in DynamicBatcher.open_flows until cancelled

    @property
    def live(self) -> bool:
        return self.state.live

    def submit(self, payload: In, length: int, timeout: float | None = None) -> Future[Out]:
        """Queue one window; waits for space (at most ``timeout`` s: ``TimeoutError``)."""
        return self._batcher._submit(self, payload, length, timeout)

    def cancel(self) -> int:
        """Drop the queued windows and refuse new ones; returns how many were dropped."""
        return self._batcher._cancel(self)

    def __enter__(self) -> Flow[In, Out]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        run_batch: Callable[[list[In]], list[Out]],
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        close_when_idle: bool = False,
        length_ratio: float = DEFAULT_LENGTH_RATIO,
        length_slack: int = 0,
        on_cancelled: Callable[[int], None] | None = None,
        on_lengths: Callable[[list[int]], None] | None = None,
        on_queue_wait: Callable[[float, Priority], None] | None = None,
        on_inference: Callable[[float, Priority], None] | None = None,
        live_budget: int = 0,
        file_slots: int = 0,
        file_yield_s: float = 0.0,
        urgent_lane: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size: None)
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._on_cancelled = on_cancelled or (lambda count: None)
        self._on_lengths = on_lengths or (lambda lengths: None)
        self._on_queue_wait = on_queue_wait or (lambda seconds, priority: None)
        self._on_inference = on_inference or (lambda seconds, priority: None)
        self.close_when_idle = close_when_idle
        self.file_slots = file_slots  # 0: no CPU reserve
        self.file_yield_s = file_yield_s
        self._producers = 0
        self._preparing: dict[Priority, int] = dict.fromkeys(Priority, 0)
        # Running batches by lane (0: any work, 1: the urgent lane): (started, holds urgent work).
        self._running: dict[int, tuple[float, bool]] = {}
        self._open_flows = 0
        self._scheduler: Scheduler[Future[Out]] = Scheduler(
            max_batch_size, length_ratio, length_slack, live_budget
        )
        self._payloads: dict[int, In] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._last_progress = time.monotonic()
        self._threads = [
            threading.Thread(target=self._loop, args=(lane,), name=name, daemon=True)
            for lane, name in enumerate(["kubescribe-batcher", "kubescribe-batcher-urgent"])
            if lane == 0 or urgent_lane
        ]
        for thread in self._threads:
            thread.start()

    # -- callers -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Windows queued (not yet in a running batch)."""
        with self._cond:
            return len(self._scheduler)

    @property
    def open_flows(self) -> int:
        """Flows opened and not yet cancelled: the requests and sessions sharing the batches."""
        return self._open_flows

    def lookahead(self) -> int:
        """How many windows one flow should keep queued: enough that the open flows together
        fill a batch (``max_batch_size`` for a flow alone), at least 2. Preparing more would only
        spend CPU on windows that wait (and are wasted when the client hangs up)."""
        return max(2, -(-self.max_batch_size // max(1, self._open_flows)))

    def open_flow(self, priority: Priority = Priority.FILE) -> Flow[In, Out]:
        with self._cond:
            self._open_flows += 1
            self._scheduler.live_flows += priority is Priority.LIVE
        return Flow(self, priority, counted=True)

    def submit(self, payload: In, length: int, priority: Priority = Priority.FILE) -> Future[Out]:
        """A window on its own flow."""
        return Flow(self, priority, counted=False).submit(payload, length)

    def _submit(
        self, flow: Flow[In, Out], payload: In, length: int, timeout: float | None
    ) -> Future[Out]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise BatcherClosed("the server is shutting down")
                if flow.cancelled:
                    raise FlowCancelled("the request was cancelled")
                if flow.live or len(self._scheduler) < self.max_queue:
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError("no room in the batcher's queue in time")
                self._cond.wait(remaining)
            future: Future[Out] = Future()
            self._payloads[id(future)] = payload
            self._scheduler.add(future, length, flow.state, time.monotonic())
            self._on_queue_depth(len(self._scheduler))
            self._cond.notify_all()
            return future

    def _cancel(self, flow: Flow[In, Out]) -> int:
        with self._cond:
            if flow.counted and not flow.cancelled:
                self._open_flows -= 1
                self._scheduler.live_flows -= flow.live
            flow.cancelled = True
            dropped = self._scheduler.discard(flow.state)
            for future in dropped:
                self._payloads.pop(id(future), None)
                future.cancel()
            if dropped:
                self._on_queue_depth(len(self._scheduler))
                self._on_cancelled(len(dropped))
            self._cond.notify_all()
        return len(dropped)

    @contextlib.contextmanager
    def producing(self, priority: Priority = Priority.FILE) -> Iterator[None]:
        """Mark a caller that is preparing a window (decoding audio, computing features).

        While any caller is, a batch that is neither full nor due waits for it; once none is
        (and ``close_when_idle``), the batch closes at once. A file request may first wait
        for the CPU reserve (see the module docstring).
        """
        with self._cond:
            if priority is Priority.FILE and self.file_slots:
                self._wait_for_file_slot()
            self._producers += 1
            self._preparing[priority] += 1
        try:
            yield
        finally:
            with self._cond:
                self._producers -= 1
                self._preparing[priority] -= 1
                self._cond.notify_all()

    def _urgent(self) -> bool:
        """Live or short work is being prepared, is queued or is running (lock held)."""
        preparing = self._preparing[Priority.LIVE] + self._preparing[Priority.SHORT]
        running = any(urgent for _, urgent in self._running.values())
        return bool(preparing) or running or self._scheduler.urgent_queued()

    def _wait_for_file_slot(self) -> None:
        started = time.monotonic()
        while not self._closed:
            waited = time.monotonic() - started
            verdict = file_may_prepare(
                self._preparing[Priority.FILE],
                self.file_slots,
                self._urgent(),
                waited,
                self.file_yield_s,
            )
            if verdict.go:
                return
            self._cond.wait(verdict.recheck_s)

    def stalled_s(self, now: float | None = None) -> float:
        """Seconds that work has waited with no batch finishing (0 while idle)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            dead = not all(thread.is_alive() for thread in self._threads)
            if dead and not self._closed:  # a worker died
                return now - self._last_progress
            oldest = self._scheduler.oldest_enqueued()
            busy_since = min((started for started, _ in self._running.values()), default=None)
            if busy_since is None and oldest is None:
                return 0.0
            if busy_since is not None:  # a batch is running: since the oldest started
                return max(0.0, now - busy_since)
            return max(0.0, now - max(self._last_progress, oldest or 0.0))

    def close(self, timeout: float | None = None) -> None:
        """Run what is queued, then stop the workers."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- the worker --------------------------------------------------------------------------

    def _next_batch(self, lane: int) -> tuple[Priority, list[tuple[Future[Out], In, int]]] | None:
        urgent_only = lane == 1
        with self._cond:
            while True:
                if self._scheduler.urgent_queued() if urgent_only else len(self._scheduler):
                    oldest = self._scheduler.oldest_enqueued() or 0.0
                    remaining = oldest + self.max_delay_s - time.monotonic()
                    full = len(self._scheduler) >= self.max_batch_size
                    nobody_coming = self.close_when_idle and self._producers == 0
                    if full or remaining <= 0 or self._closed or nobody_coming:
                        break
                    self._cond.wait(remaining)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()
            entries = self._scheduler.take(urgent_only)
            now = time.monotonic()
            self._running[lane] = (now, any(e.flow.priority < Priority.FILE for e in entries))
            for entry in entries:
                self._on_queue_wait(now - entry.enqueued, entry.flow.priority)
            self._on_queue_depth(len(self._scheduler))
            self._cond.notify_all()  # room for waiting submitters
            head = entries[0].flow.priority if entries else Priority.FILE
            batch = [(e.item, self._payloads.pop(id(e.item)), e.length) for e in entries]
        return head, [(f, p, n) for f, p, n in batch if f.set_running_or_notify_cancel()]

    def _loop(self, lane: int) -> None:
        while (next_batch := self._next_batch(lane)) is not None:
            head, batch = next_batch
            try:
                if batch:
                    self._run(batch, head)
            finally:
                with self._cond:
                    self._running.pop(lane, None)
                    self._last_progress = time.monotonic()
                    self._cond.notify_all()  # files waiting for the CPU reserve

    def _run(self, batch: list[tuple[Future[Out], In, int]], head: Priority) -> None:
        batch.sort(key=lambda job: job[2])
        self._on_batch(len(batch))
        self._on_lengths([n for _, _, n in batch])
        started = time.monotonic()
        try:
            results = self._run_batch([payload for _, payload, _ in batch])
            self._on_inference(time.monotonic() - started, head)
        except Exception as exc:  # handed to every waiting request
            log.exception("batch of %d failed", len(batch))
            for future, _, _ in batch:
                future.set_exception(exc)
            return
        for (future, _, _), result in zip(batch, results, strict=True):
            future.set_result(result)
