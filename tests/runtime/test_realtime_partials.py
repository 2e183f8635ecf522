"""The stable-partial policy: deltas only append, a word goes out once it is stable, and the
final transcript's remaining words close the turn."""

from __future__ import annotations

import pytest
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.realtime.partials import PartialPolicy, StablePartials, delta_text


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end) for text, start, end in spec]


def test_a_word_far_from_the_right_edge_is_stable_at_once() -> None:
    policy = StablePartials(PartialPolicy(edge_margin_s=1.0))
    emitted = policy.update(words(("hello", 0.2, 0.6), ("wor", 1.9, 2.0)), window_end_s=2.0)
    assert [w.word for w in emitted] == ["hello"]


def test_a_word_near_the_edge_waits_for_a_second_identical_hypothesis() -> None:
    policy = StablePartials(PartialPolicy(edge_margin_s=1.0, guard_s=0.25))
    assert policy.update(words(("pack", 1.0, 1.5)), window_end_s=1.8) == []
    # The next hypothesis changed the word: still nothing.
    assert policy.update(words(("package", 1.0, 1.9)), window_end_s=2.3) == []
    # Seen again at the same place, and not at the edge: out.
    stable = policy.update(words(("package", 1.02, 1.9)), window_end_s=2.4)
    assert [w.word for w in stable] == ["package"]


def test_the_first_unstable_word_stops_the_emission() -> None:
    policy = StablePartials(PartialPolicy(edge_margin_s=1.0))
    hypothesis = words(("a", 0.1, 0.3), ("b", 0.5, 1.7), ("c", 0.9, 1.0))
    assert [w.word for w in policy.update(hypothesis, window_end_s=2.0)] == ["a"]


def test_deltas_never_take_back_or_repeat_a_word() -> None:
    policy = StablePartials(PartialPolicy(edge_margin_s=0.5))
    out: list[str] = []
    hypotheses = [
        (words(("the", 0.1, 0.3), ("cat", 0.5, 0.8)), 1.5),
        # A later window re-decodes "the" as "a" and "cat" as "hat": both already emitted.
        (words(("a", 0.1, 0.3), ("hat", 0.5, 0.8), ("sat", 1.0, 1.3)), 2.0),
        (words(("hat", 0.52, 0.8), ("sat", 1.0, 1.3), ("down", 1.6, 2.0)), 3.0),
    ]
    for hypothesis, end in hypotheses:
        out += [w.word for w in policy.update(hypothesis, end)]
    assert out == ["the", "cat", "sat", "down"]


def test_the_remainder_is_what_the_final_decode_adds_after_the_emitted_words() -> None:
    policy = StablePartials(PartialPolicy(edge_margin_s=0.5))
    policy.update(words(("one", 0.1, 0.4), ("two", 0.6, 0.9)), window_end_s=1.6)
    final = words(("one", 0.1, 0.4), ("two", 0.6, 0.9), ("three", 1.2, 1.6))
    assert [w.word for w in policy.remainder(final)] == ["three"]
    assert [w.word for w in policy.emitted] == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("spoken", "first", "expected"),
    [(["hello"], True, "hello"), (["big", "world"], False, " big world"), ([], False, "")],
)
def test_delta_text(spoken: list[str], first: bool, expected: str) -> None:
    assert delta_text([Word(w, 0, 1) for w in spoken], first) == expected
