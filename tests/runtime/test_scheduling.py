"""The schedule, exactly: live sessions first, fair turns across requests on audio length, and
batches of similar lengths only."""

from __future__ import annotations

import pytest
from kubescribe_runtime.scheduling import (
    FlowState,
    Priority,
    Scheduler,
    file_may_prepare,
)

SECOND = 100  # feature frames per second of audio


def padding_ratio(lengths: list[int]) -> float:
    """Padded frames over real frames of one batch (0: no padding)."""
    return (max(lengths) * len(lengths) - sum(lengths)) / sum(lengths)


def order(scheduler: Scheduler[str]) -> list[list[str]]:
    batches = []
    while batch := scheduler.take():
        batches.append([entry.item for entry in batch])
    return batches


def test_a_short_clip_and_a_live_window_go_before_a_long_files_queue() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=1)
    long_file, clip, live = FlowState(), FlowState(), FlowState(Priority.LIVE)
    for i in range(4):
        scheduler.add(f"file-{i}", 20 * SECOND, long_file, now=0)
    scheduler.add("clip", 5 * SECOND, clip, now=1)
    scheduler.add("live", 3 * SECOND, live, now=2)
    # FIFO would run the clip after 80 s of file audio, the live window after the clip.
    assert order(scheduler) == [["live"], ["clip"], ["file-0"], ["file-1"], ["file-2"], ["file-3"]]


def test_two_long_files_take_turns_and_a_late_one_joins_at_the_current_turn() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=1)
    a, b, c = FlowState(), FlowState(), FlowState()
    for i in range(3):
        scheduler.add(f"a{i}", 20 * SECOND, a, now=0)
    for i in range(3):
        scheduler.add(f"b{i}", 20 * SECOND, b, now=0)
    assert order_first(scheduler, 2) == [["a0"], ["b0"]]
    # c was idle: it starts at the current virtual time, with no credit for the idle time
    scheduler.add("c0", 20 * SECOND, c, now=5)
    assert order(scheduler) == [["a1"], ["b1"], ["c0"], ["a2"], ["b2"]]


def order_first(scheduler: Scheduler[str], count: int) -> list[list[str]]:
    return [[entry.item for entry in scheduler.take()] for _ in range(count)]


def test_batches_hold_similar_lengths_in_schedule_order() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=4, length_slack=SECOND)
    a, b, c, d = FlowState(), FlowState(), FlowState(), FlowState()
    for i in range(3):
        scheduler.add(f"a{i}", 20 * SECOND, a, now=0)
    scheduler.add("b-2s", 2 * SECOND, b, now=0)
    scheduler.add("c-2.5s", 250, c, now=0)
    scheduler.add("d-19s", 19 * SECOND, d, now=0)
    batches = [[(e.item, e.length) for e in batch] for batch in iter(scheduler.take, [])]
    assert [[item for item, _ in batch] for batch in batches] == [
        ["b-2s", "c-2.5s"],  # the 2 s clip is never padded to 20 s
        ["d-19s", "a0", "a1", "a2"],  # tags 19 s, 20 s, 40 s, 60 s
    ]
    assert [round(padding_ratio([n for _, n in batch]), 3) for batch in batches] == [0.111, 0.013]


@pytest.mark.parametrize(
    ("shortest", "longest", "similar"),
    [
        (20 * SECOND, 20 * SECOND, True),
        (16 * SECOND, 20 * SECOND, True),  # 25 % longer
        (15 * SECOND, 20 * SECOND, False),
        (2 * SECOND, 3 * SECOND, True),  # within the one-second slack
        (2 * SECOND, 20 * SECOND, False),
    ],
)
def test_similar_lengths(shortest: int, longest: int, similar: bool) -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=4, length_slack=SECOND)
    assert scheduler.similar(shortest, longest) is similar


def test_discarding_a_flow_keeps_the_others_in_order() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=1)
    gone, kept = FlowState(), FlowState()
    for i in range(3):
        scheduler.add(f"gone-{i}", SECOND, gone, now=0)
        scheduler.add(f"kept-{i}", SECOND, kept, now=0)
    assert scheduler.discard(gone) == ["gone-0", "gone-1", "gone-2"]
    assert order(scheduler) == [["kept-0"], ["kept-1"], ["kept-2"]]


def test_while_a_session_is_open_batches_stay_within_the_live_budget() -> None:
    """A running batch is never interrupted: with a session open, file batches are cut to the
    live budget (padding included), so a live window waits for at most that much audio."""
    scheduler: Scheduler[str] = Scheduler(max_batch_size=16, live_budget=30 * SECOND)
    file = FlowState()
    for i in range(6):
        scheduler.add(f"file-{i}", 20 * SECOND, file, now=0)
    clips = [FlowState() for _ in range(20)]
    for i, clip in enumerate(clips):
        scheduler.add(f"clip-{i}", 2 * SECOND, clip, now=0)
    scheduler.live_flows = 1  # a session is open, none of its windows queued
    batches = order(scheduler)
    assert max(len(b) for b in batches if b[0].startswith("file")) == 1
    assert max(len(b) for b in batches if b[0].startswith("clip")) == 15  # 15 × 2 s = 30 s
    assert sorted(item for batch in batches for item in batch) == sorted(
        [f"file-{i}" for i in range(6)] + [f"clip-{i}" for i in range(20)]
    )


def test_the_live_budget_holds_a_sessions_windows_together_and_lapses_when_it_closes() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=16, live_budget=30 * SECOND)
    sessions = [FlowState(Priority.LIVE) for _ in range(4)]
    file = FlowState()
    for i in range(4):
        scheduler.add(f"file-{i}", 20 * SECOND, file, now=0)
    for i, session in enumerate(sessions):
        scheduler.add(f"live-{i}", 6 * SECOND, session, now=1)
    scheduler.live_flows = 4
    # four partial windows of 6 s fit in one batch; a file window does not join them
    assert [entry.item for entry in scheduler.take()] == [f"live-{i}" for i in range(4)]
    assert [entry.item for entry in scheduler.take()] == ["file-0"]
    scheduler.live_flows = 0  # the sessions ended: files batch as before
    assert [entry.item for entry in scheduler.take()] == ["file-1", "file-2", "file-3"]


def test_without_a_live_budget_a_session_does_not_shrink_batches() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=16)
    file = FlowState()
    for i in range(4):
        scheduler.add(f"file-{i}", 20 * SECOND, file, now=0)
    scheduler.live_flows = 1
    assert len(scheduler.take()) == 4


def test_a_short_request_goes_before_file_windows_that_fair_turns_would_put_first() -> None:
    """Priority classes: live, then short requests (one window), then files; fair turns hold
    within a class only. By fair tags alone the 5 s clip would wait for two file windows."""
    scheduler: Scheduler[str] = Scheduler(max_batch_size=1)
    file, clip, live = FlowState(), FlowState(Priority.SHORT), FlowState(Priority.LIVE)
    for i in range(4):
        scheduler.add(f"file-{i}", 2 * SECOND, file, now=0)  # tags 2, 4, 6, 8 s
    scheduler.add("clip", 5 * SECOND, clip, now=1)  # tag 5 s
    scheduler.add("live", 3 * SECOND, live, now=2)
    assert scheduler.urgent_queued()
    assert order(scheduler) == [["live"], ["clip"], ["file-0"], ["file-1"], ["file-2"], ["file-3"]]
    assert not scheduler.urgent_queued()


def test_short_requests_take_fair_turns_among_themselves() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=1)
    a, b = FlowState(Priority.SHORT), FlowState(Priority.SHORT)
    scheduler.add("a0", 10 * SECOND, a, now=0)
    scheduler.add("a1", 8 * SECOND, a, now=0)
    scheduler.add("b0", 5 * SECOND, b, now=1)
    assert order(scheduler) == [["b0"], ["a0"], ["a1"]]  # tags 5, 10, 18 s


@pytest.mark.parametrize(
    ("preparing", "urgent", "waited_s", "go", "recheck_s"),
    [
        (0, False, 0.0, True, None),  # a free slot, nothing urgent: go
        (1, False, 0.0, False, None),  # the slot is taken: wait until it is given back
        (1, True, 9.0, False, None),  # ... however long it waited
        (0, True, 0.0, False, 0.25),  # live or short work: yield, at most 0.25 s
        (0, True, 0.1, False, 0.15),
        (0, True, 0.25, True, None),  # yielded enough: files progress under any live load
    ],
)
def test_the_cpu_reserve_lets_a_file_prepare_its_next_window(
    preparing: int, urgent: bool, waited_s: float, go: bool, recheck_s: float | None
) -> None:
    verdict = file_may_prepare(preparing, 1, urgent, waited_s, yield_s=0.25)
    assert verdict.go is go
    assert verdict.recheck_s == pytest.approx(recheck_s) if recheck_s else verdict.recheck_s is None


def test_the_urgent_lane_takes_live_and_short_windows_only() -> None:
    scheduler: Scheduler[str] = Scheduler(max_batch_size=4, length_slack=SECOND)
    file, clip, live = FlowState(), FlowState(Priority.SHORT), FlowState(Priority.LIVE)
    scheduler.add("file", 2 * SECOND, file, now=0)
    assert scheduler.take(urgent_only=True) == []
    scheduler.add("clip", 2 * SECOND, clip, now=1)
    scheduler.add("live", 2 * SECOND, live, now=2)
    assert [e.item for e in scheduler.take(urgent_only=True)] == ["live", "clip"]
    assert [e.item for e in scheduler.take()] == ["file"]


def test_an_urgent_lane_batch_stays_within_the_live_budget_without_a_session() -> None:
    """The lane runs beside a full batch: its own batches stay small (memory for one full batch
    and a small one, not two full ones); the first lane still takes full batches of clips."""
    scheduler: Scheduler[str] = Scheduler(max_batch_size=16, live_budget=12 * SECOND)
    clips = [FlowState(Priority.SHORT) for _ in range(10)]
    for i, clip in enumerate(clips):
        scheduler.add(f"clip-{i}", 2 * SECOND, clip, now=0)
    assert len(scheduler.take(urgent_only=True)) == 6  # 6 × 2 s = 12 s
    assert len(scheduler.take()) == 4  # no session open: no bound
