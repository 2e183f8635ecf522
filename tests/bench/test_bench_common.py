"""The benchmarks' pure helpers: document sections, clip planning and building, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import (
    SAMPLE_RATE,
    build_clips,
    markdown_table,
    percentile,
    plan_clips,
    read_testset,
    replace_section,
    section_markers,
)
from bench.pipeline import groups, verdict


def test_replace_section_replaces_only_its_own_section() -> None:
    a_start, a_end = section_markers("a")
    b_start, b_end = section_markers("b")
    text = f"# T\n\nintro\n\n{a_start}\nold a\n{a_end}\n\nmiddle\n\n{b_start}\nold b\n{b_end}\n"
    result = replace_section(text, "a", "new a")
    assert result == text.replace("old a", "new a")
    assert replace_section(result, "a", "new a") == result  # idempotent


def test_replace_section_appends_a_missing_section() -> None:
    start, end = section_markers("c")
    result = replace_section("# T\n", "c", "body")
    assert result == f"# T\n\n{start}\nbody\n{end}\n"


def test_replace_section_keeps_backslashes_and_group_syntax_literally() -> None:
    body = r"a \1 \g<0> | b"
    assert body in replace_section("", "x", body)


def test_plan_clips_cycles_through_the_set_and_reaches_the_length() -> None:
    plan = plan_clips([3.0, 4.0, 5.0], count=3, seconds=6.0, gap_s=0.5)
    assert plan == [[0, 1], [2, 0], [1, 2]]
    with pytest.raises(Exception, match="no utterances"):
        plan_clips([], 1, 1.0, 0.0)


def test_build_clips_exact_length_and_whole_utterance_references() -> None:
    utterances = read_testset()[:4]
    clips = build_clips(utterances, count=2, seconds=5.0)
    assert [len(c.samples) for c in clips] == [5 * SAMPLE_RATE] * 2
    # References hold only the utterances wholly inside the clip.
    assert clips[0].text.startswith(utterances[0].text)
    long = build_clips(utterances, count=1, seconds=5.0, exact=False)[0]
    assert long.seconds >= 5.0
    assert long.text.split()[: len(utterances[0].text.split())] == utterances[0].text.split()
    assert np.isfinite(long.samples).all()


def test_groups_cover_every_clip_once_in_batches() -> None:
    assert groups(5, 2) == [[0, 1], [2, 3], [4]]
    assert groups(3, 8) == [[0, 1, 2]]


def test_percentile_and_table() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"


def test_verdict_says_by_how_much_a_target_is_missed() -> None:
    assert verdict(1.2, 1.0).startswith("met")
    assert "missed by 25 %" in verdict(0.6, 0.8)
