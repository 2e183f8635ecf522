"""Long audio: windows cover the stream with bounded memory; seams keep every word once."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from kubescribe_runtime.ctc import Word
from kubescribe_runtime.windowing import Stitcher, WindowWords, seam, stitch, windows


def _blocks(total: int, block: int) -> list[np.ndarray]:
    data = np.arange(total, dtype=np.float32)
    return [data[i : i + block] for i in range(0, total, block)]


@pytest.mark.parametrize(("total", "block"), [(95, 7), (100, 100), (30, 4), (10, 3), (86, 86)])
def test_windows_cover_everything_with_overlap(total: int, block: int) -> None:
    result = list(windows(_blocks(total, block), window=20, overlap=4))
    assert result[0].start == 0
    assert result[-1].end == total
    for previous, current in itertools.pairwise(result):
        assert current.start == previous.end - 4
    for w in result:
        assert len(w.samples) <= 20
        np.testing.assert_array_equal(w.samples, np.arange(w.start, w.end, dtype=np.float32))


def test_a_tail_inside_the_overlap_makes_no_extra_window() -> None:
    result = list(windows(_blocks(18 + 16 + 2, 5), window=20, overlap=4))
    assert [(w.start, w.end) for w in result] == [(0, 20), (16, 36)]


def _window_words(
    truth: list[Word], start: float, end: float, cut_edges: bool = True
) -> WindowWords:
    """What a window [start, end) hears: whole words, and the edges' cut words mangled."""
    heard = []
    for w in truth:
        if w.start >= start and w.end <= end:
            heard.append(Word(w.word, w.start - start, w.end - start))
        elif cut_edges and w.end > start and w.start < end:
            heard.append(
                Word(w.word[:2] + "~", max(w.start, start) - start, min(w.end, end) - start)
            )
    return WindowWords(start, end, heard)


def test_stitch_keeps_each_word_exactly_once_whatever_the_seams() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        truth, t = [], 0.0
        while t < 95:
            t += rng.uniform(0.05, 0.5)
            length = rng.uniform(0.15, 0.9)
            truth.append(Word(f"w{len(truth)}", t, t + length))
            t += length
        parts, start = [], 0.0
        while True:
            end = min(start + 20.0, t + 0.5)
            parts.append(_window_words(truth, start, end))
            if end >= t + 0.5:
                break
            start = end - 2.0
        stitched = stitch(parts)
        assert [w.word for w in stitched] == [w.word for w in truth]
        assert all(abs(a.start - b.start) < 1e-9 for a, b in zip(stitched, truth, strict=True))


def test_the_stitcher_releases_each_window_up_to_its_seam_and_never_takes_a_word_back() -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        truth, t = [], 0.0
        while t < 75:
            t += rng.uniform(0.05, 0.5)
            length = rng.uniform(0.15, 0.9)
            truth.append(Word(f"w{len(truth)}", t, t + length))
            t += length
        starts = np.arange(0.0, t, 18.0)
        parts = [_window_words(truth, s, min(s + 20.0, t + 0.5)) for s in starts]
        stitcher, released = Stitcher(), []
        for part, next_start in zip(parts, [*starts[1:], starts[-1] + 18.0], strict=True):
            cut = seam(part.end_s, float(next_start))
            released += stitcher.add(part, cut)
            assert [w.word for w in released] == [w.word for w in truth[: len(released)]]
            assert all(w.center >= cut for w in truth[len(released) :])
        released += stitcher.finish()
        assert released == stitch(parts)
        assert [w.word for w in released] == [w.word for w in truth]
