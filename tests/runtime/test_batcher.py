"""The dynamic batcher: shared batches, similar lengths together, bounded queue, timeouts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubescribe_runtime.batcher import BatcherClosed, DynamicBatcher, QueueFull, choose_batch


def test_choose_batch_keeps_the_oldest_and_groups_similar_lengths() -> None:
    lengths = [50, 10, 900, 52, 11, 49, 880, 51]
    chosen = choose_batch(lengths, 4)
    assert 0 in chosen
    assert sorted(lengths[i] for i in chosen) == [49, 50, 51, 52]
    assert choose_batch([5, 1, 3], 4) == [0, 1, 2]
    # the oldest is the longest: its neighbours in length come along
    assert sorted(choose_batch([100, 1, 2, 90, 95], 2)) == [0, 4]


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


def test_a_full_queue_is_refused_with_retry_after() -> None:
    gate = threading.Event()
    batcher = DynamicBatcher(_Recorder(gate), max_batch_size=1, max_delay_s=0, max_queue=2)
    first = batcher.submit(1, 1)  # taken by the worker, which blocks on the gate
    while batcher.depth:
        time.sleep(0.001)
    batcher.submit(2, 1)
    batcher.submit(3, 1)
    with pytest.raises(QueueFull) as raised:
        batcher.submit(4, 1)
    assert raised.value.retry_after_s >= 1
    gate.set()
    assert first.result(10) == 10
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(5, 1)


def test_cancelled_jobs_are_skipped_and_failures_reach_every_caller() -> None:
    gate = threading.Event()
    recorder = _Recorder(gate)
    batcher = DynamicBatcher(recorder, max_batch_size=1, max_delay_s=0, max_queue=10)
    blocker = batcher.submit(1, 1)
    while batcher.depth:
        time.sleep(0.001)
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
        b = batcher.submit(2, 2)
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
