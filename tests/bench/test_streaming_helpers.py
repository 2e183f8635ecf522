"""bench.streaming's pure helpers: how streams share the test set, how delta words are matched
to the offline transcript's words for the latency."""

from __future__ import annotations

import pytest

from bench.streaming import Level, capacity, match_latencies, plan_streams


def test_enough_streams_cover_the_whole_test_set_once_in_order() -> None:
    plan = plan_streams(count=62, streams=16, per_stream=4)
    assert [len(p) for p in plan] == [4] * 16
    flat = [i for p in plan for i in p]
    assert flat[:62] == list(range(62)) and set(flat) == set(range(62))


def test_a_small_set_is_cycled() -> None:
    assert plan_streams(count=3, streams=2, per_stream=2) == [[0, 1], [2, 0]]


def test_latencies_of_delta_words_matched_in_order() -> None:
    deltas = [("the", 1.0), ("cat", 1.5), ("sad", 2.4), ("down", 3.2)]
    spoken = [("the", 0.3), ("cat", 0.7), ("sat", 1.2), ("down", 2.0)]
    # "sad" matches nothing; each other delta word gets arrival - end of the spoken word.
    assert match_latencies(deltas, spoken) == pytest.approx([0.7, 0.8, 1.2])


def test_no_deltas_no_latencies() -> None:
    assert match_latencies([], [("a", 1.0)]) == []


def level(streams: int, p95: float, complete: bool = True) -> Level:
    return Level(streams, [p95] * 20, streams if complete else streams - 1, 1.0, 10.0, 0.1, 0.1)


def test_capacity_is_the_last_level_before_the_first_miss() -> None:
    levels = [level(1, 0.9), level(4, 1.2), level(8, 1.4), level(16, 2.5), level(32, 1.0)]
    assert capacity(levels) == "8"
    assert capacity([level(1, 0.9), level(2, 0.9, complete=False)]) == "1"


def test_capacity_says_when_every_level_held() -> None:
    assert capacity([level(1, 0.9), level(16, 1.2)]) == "at least 16 (the most tried)"
