"""The dynamic batcher: shared batches, a bounded queue that makes submitters wait (never
refuse), cancelled flows, live flows, the stall measure behind /healthz."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from kubescribe_runtime.batcher import BatcherClosed, DynamicBatcher, FlowCancelled
from kubescribe_runtime.scheduling import Priority
from rt_server import wait_until


class _Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        return [i * 10 for i in items]


def test_concurrent_jobs_share_batches_and_get_their_own_results() -> None:
    recorder = _Recorder()
    sizes: list[int] = []
    batcher = DynamicBatcher(
        recorder, max_batch_size=8, max_delay_s=0.5, max_queue=100, on_batch=sizes.append
    )
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda i: batcher.submit(i, length=i), range(16)))
        results = [f.result(10) for f in futures]
    batcher.close()
    assert results == [i * 10 for i in range(16)]
    assert max(sizes) > 1 and max(sizes) <= 8
    assert sum(sizes) == 16
    for batch in recorder.batches:
        assert batch == sorted(batch)  # sorted by length inside the batch


def test_a_full_queue_makes_the_submitter_wait_instead_of_refusing() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate)
    batcher = DynamicBatcher(recorder, max_batch_size=1, max_delay_s=0, max_queue=2)
    first = batcher.submit(1, 1)  # taken by the worker, which blocks on the gate
    wait_until(lambda: not batcher.depth, "the first window taken into a batch")
    flow = batcher.open_flow()
    queued = [flow.submit(2, 1), flow.submit(3, 1)]
    fourth: list[Future[int]] = []
    waiter = threading.Thread(target=lambda: fourth.append(flow.submit(4, 1)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and batcher.depth == 2  # waiting for room, not refused
    with pytest.raises(TimeoutError):
        batcher.open_flow().submit(9, 1, timeout=0.05)  # a deadline bounds the wait
    live = batcher.open_flow(Priority.LIVE).submit(5, 1)  # live windows never wait for room
    gate.set()
    waiter.join(10)
    assert [f.result(10) for f in (first, *queued, live)] == [10, 20, 30, 50]
    assert fourth[0].result(10) == 40
    assert recorder.batches[1] == [5]  # the live window went first once the gate opened
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(5, 1)


def test_a_cancelled_flow_loses_its_queued_windows_and_makes_no_more() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate)
    cancelled: list[int] = []
    batcher = DynamicBatcher(
        recorder, max_batch_size=1, max_delay_s=0, max_queue=10, on_cancelled=cancelled.append
    )
    with batcher.open_flow() as flow:
        running = flow.submit(1, 1)
        wait_until(lambda: not batcher.depth, "the first window taken into a batch")
        queued = [flow.submit(i, 1) for i in (2, 3, 4)]
        other = batcher.submit(7, 1)
        assert flow.cancel() == 3  # the client hung up
        with pytest.raises(FlowCancelled):
            flow.submit(5, 1)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert (running.result(10), other.result(10)) == (10, 70)
    assert recorder.batches == [[1], [7]] and cancelled == [3]
    batcher.close()


def test_stall_is_measured_while_a_batch_hangs_and_is_zero_when_idle() -> None:
    gate = threading.Event()
    batcher = DynamicBatcher(_Recorder(gate), max_batch_size=1, max_delay_s=0, max_queue=10)
    later = time.monotonic() + 100
    assert batcher.stalled_s(later) == 0.0  # idle for 100 s is healthy
    stuck = batcher.submit(1, 1)
    wait_until(lambda: not batcher.depth, "the window taken into a batch")
    assert batcher.stalled_s(later) >= 99  # a batch running for 100 s
    gate.set()
    assert stuck.result(10) == 10
    wait_until(lambda: not batcher.stalled_s(), "the batch finished")
    assert batcher.stalled_s(later) == 0.0
    batcher.close()


def test_cancelled_jobs_are_skipped_and_failures_reach_every_caller() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate)
    batcher = DynamicBatcher(recorder, max_batch_size=1, max_delay_s=0, max_queue=10)
    blocker = batcher.submit(1, 1)
    wait_until(lambda: not batcher.depth, "the first window taken into a batch")
    abandoned = batcher.submit(2, 1)
    assert abandoned.cancel()  # what a timed-out request does
    kept = batcher.submit(3, 1)
    gate.set()
    assert (blocker.result(10), kept.result(10)) == (10, 30)
    assert [2] not in recorder.batches
    batcher.close()

    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("model exploded")

    failing = DynamicBatcher(broken, max_batch_size=4, max_delay_s=0.01, max_queue=10)
    futures = [failing.submit(i, i) for i in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="model exploded"):
            future.result(10)
    # the worker survives a failed batch
    failing._run_batch = lambda items: items
    assert failing.submit(7, 7).result(10) == 7
    failing.close()


# An hour of max delay: a batch that closes here closed because nobody could join it.
HOUR = 3600.0


def test_a_lone_job_runs_at_once_when_nobody_is_preparing_another() -> None:
    recorder = _Recorder()
    batcher = DynamicBatcher(
        recorder, max_batch_size=8, max_delay_s=HOUR, max_queue=10, close_when_idle=True
    )
    with batcher.producing():
        future = batcher.submit(1, 1)
    assert future.result(60) == 10
    batcher.close()

    # Without close_when_idle the same job waits out its delay for batch-mates.
    waiting = DynamicBatcher(_Recorder(), max_batch_size=8, max_delay_s=HOUR, max_queue=10)
    with waiting.producing():
        held = waiting.submit(1, 1)
    with pytest.raises(TimeoutError):
        held.result(0.3)
    waiting.close()  # closing runs what is queued
    assert held.result(60) == 10


def test_a_batch_waits_for_a_caller_still_preparing_its_job() -> None:
    recorder = _Recorder()
    batcher = DynamicBatcher(
        recorder, max_batch_size=8, max_delay_s=HOUR, max_queue=10, close_when_idle=True
    )
    with batcher.producing():  # B is decoding its audio
        with batcher.producing():
            a = batcher.submit(1, 1)
        with pytest.raises(TimeoutError):
            a.result(0.3)  # A waits for B, who may still join
        b = batcher.submit(2, 1)  # a similar length: they may share a batch
    assert (a.result(60), b.result(60)) == (10, 20)
    assert recorder.batches == [[1, 2]]  # one batch for both
    batcher.close()


def test_a_caller_that_fails_before_submitting_releases_the_batch() -> None:
    recorder = _Recorder()
    batcher = DynamicBatcher(
        recorder, max_batch_size=8, max_delay_s=HOUR, max_queue=10, close_when_idle=True
    )
    with pytest.raises(ValueError, match="unreadable"), batcher.producing():  # B
        with batcher.producing():
            a = batcher.submit(1, 1)
        assert not a.done()
        raise ValueError("unreadable audio")  # B never submits
    assert a.result(60) == 10
    assert recorder.batches == [[1]]
    batcher.close()


def test_each_flow_keeps_only_its_share_of_a_batch_queued() -> None:
    batcher = DynamicBatcher(_Recorder(), max_batch_size=16, max_delay_s=0, max_queue=64)
    assert batcher.lookahead() == 16  # a request alone fills whole batches
    flows = [batcher.open_flow() for _ in range(5)]
    assert (batcher.open_flows, batcher.lookahead()) == (5, 4)  # 5 × 4 windows fill one
    batcher.submit(1, 1)  # a one-window submission is no flow that stays open
    for flow in flows[:4]:
        flow.cancel()
    flows[4].cancel()
    flows[4].cancel()  # cancelling twice counts once
    assert (batcher.open_flows, batcher.lookahead()) == (0, 16)
    many = [batcher.open_flow() for _ in range(40)]
    assert batcher.lookahead() == 2  # never less than two
    for flow in many:
        flow.cancel()
    batcher.close()


class _Caller:
    """A caller preparing a window of ``priority`` in its own thread: ``inside`` once it got
    in; it stays in until ``leave`` is set."""

    def __init__(self, batcher: DynamicBatcher[int, int], priority: Priority) -> None:
        self.inside, self.leave = threading.Event(), threading.Event()
        threading.Thread(target=self._run, args=(batcher, priority), daemon=True).start()

    def _run(self, batcher: DynamicBatcher[int, int], priority: Priority) -> None:
        with batcher.producing(priority):
            self.inside.set()
            self.leave.wait(60)


def test_the_cpu_reserve_holds_files_back_while_short_work_is_prepared_or_run() -> None:
    """With file_slots, one file request prepares a window at a time, and none starts one while
    a live or short request prepares its own or its window is queued or running (the yield is
    an hour here: only the end of the short work lets the file go)."""
    gate = threading.Event()
    batcher = DynamicBatcher(
        _Recorder(gate), max_batch_size=8, max_delay_s=0, max_queue=10, file_slots=1,
        file_yield_s=HOUR,
    )  # fmt: skip
    first = _Caller(batcher, Priority.FILE)
    wait_until(first.inside.is_set, "the first file request preparing")
    second = _Caller(batcher, Priority.FILE)
    clip = _Caller(batcher, Priority.SHORT)  # short work never waits for the reserve
    wait_until(clip.inside.is_set, "the clip preparing beside the file")
    first.leave.set()
    assert not second.inside.wait(0.3)  # the slot is free, but the clip is being prepared
    result = batcher.submit(1, 1, Priority.SHORT)  # the clip's window, its batch held
    clip.leave.set()
    wait_until(lambda: not batcher.depth, "the clip's window running")
    assert not second.inside.wait(0.3)  # the clip's batch is running
    gate.set()
    assert result.result(60) == 10
    wait_until(second.inside.is_set, "the second file request preparing once the clip is done")
    second.leave.set()
    batcher.close()


def test_the_cpu_reserve_yields_to_live_work_for_a_bounded_time_only() -> None:
    batcher = DynamicBatcher(
        _Recorder(), max_batch_size=8, max_delay_s=0, max_queue=10, file_slots=1,
        file_yield_s=0.05,
    )  # fmt: skip
    session = _Caller(batcher, Priority.LIVE)  # live work that goes on and on
    wait_until(session.inside.is_set, "the session preparing")
    file = _Caller(batcher, Priority.FILE)
    wait_until(file.inside.is_set, "the file request going after its yield, the session busy")
    session.leave.set()
    file.leave.set()
    batcher.close()


def test_without_a_cpu_reserve_file_requests_prepare_at_once() -> None:
    batcher = DynamicBatcher(_Recorder(), max_batch_size=8, max_delay_s=0, max_queue=10)
    callers = [_Caller(batcher, Priority.SHORT)] + [
        _Caller(batcher, Priority.FILE) for _ in range(3)
    ]
    for caller in callers:
        wait_until(caller.inside.is_set, "every caller preparing at once")
    for caller in callers:
        caller.leave.set()
    batcher.close()


def test_a_live_window_runs_beside_a_running_file_batch_on_the_urgent_lane() -> None:
    """A running batch is never interrupted; with the urgent lane a live window does not wait
    for it (here the file batch runs until the test lets it end)."""
    gate = threading.Event()

    def run(items: list[int]) -> list[int]:
        if any(i >= 100 for i in items):  # the file's window
            gate.wait(60)
        return [i * 10 for i in items]

    batcher = DynamicBatcher(run, max_batch_size=8, max_delay_s=0, max_queue=10, urgent_lane=True)
    file = batcher.submit(100, 1)
    wait_until(lambda: not batcher.depth, "the file's batch running")
    live = batcher.submit(1, 1, Priority.LIVE)
    clip = batcher.submit(2, 1, Priority.SHORT)
    assert (live.result(30), clip.result(30)) == (10, 20)  # the file batch still runs
    assert not file.done()
    gate.set()
    assert file.result(30) == 1000
    batcher.close()
