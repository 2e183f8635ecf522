"""bench.streaming's pure helpers: how streams share the test set, how delta words are matched
to the offline transcript's words for the latency."""

from __future__ import annotations

import pytest

from bench.streaming import match_latencies, plan_streams


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
