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


def test_pipeline_targets_compare_with_the_best_peer_and_the_limit() -> None:
    from bench.pipeline import Result, target_lines

    result = Result(
        best_s={
            "kubescribe": 10.0,
            "kubescribe service": 11.0,
            "onnx-asr": 8.0,
            "sherpa-onnx": 20.0,
            "model only": 5.0,
        }
    )
    lines = target_lines({16: result}, audio_s=100.0)
    # kubescribe 10 audio s/s, best peer onnx-asr 12.5: missed by 20 %; limit 20: 0.5 of it.
    assert "best peer (onnx-asr)" in lines[0] and "missed by 20 %" in lines[0]
    assert "model-only limit" in lines[1] and "missed by 38 %" in lines[1]


def test_server_targets_at_16_clients() -> None:
    from bench.server import Cell, target_lines

    on = Cell(16, 5.0, latencies=[1.0] * 98 + [5.0, 5.0], elapsed=10.0)
    off = Cell(16, 5.0, latencies=[1.0] * 25, elapsed=10.0)
    (line,) = target_lines({"batching on": [on], "batching off": [off]})
    assert "4.00× ≥ 3× (met)" in line  # 50 vs 12.5 audio s/s
    assert "p99 / p50 with batching on **5.00× > 3× (missed)**" in line
    assert target_lines({"batching on": [], "batching off": []})[0].startswith("- 16 clients not")


def test_gpu_section_says_plainly_when_nothing_was_measured() -> None:
    import argparse
    from pathlib import Path

    from bench.gpu import SMOKE, Row, render

    args = argparse.Namespace(smoke=True, artifact=Path("examples/models/demo"))
    text = render(args, SMOKE, False, "no CUDA provider", [], 1000)
    assert "**No CUDA here: nothing was measured.**" in text
    assert "| model |" not in text
    rows = [Row("demo", 8, 0.02, 80.0)]
    text = render(args, SMOKE, True, "CUDA", rows, 100_000_000)
    assert "| demo | 8 | 20.0 | 0.00025 | 4,000 |" in text
    assert "100.0 M parameters" in text
