"""CTC greedy decoding, word boundaries and timestamps, segments."""

from __future__ import annotations

import numpy as np
from kubescribe_runtime.ctc import Word, greedy_words, segments_of, text_of

TOKENS = ["▁he", "llo", "▁wor", "ld", "▁", "a", "<unk>", "<blk>"]
BLANK = len(TOKENS) - 1


def _logprobs(path: list[int]) -> np.ndarray:
    out = np.full((len(path), len(TOKENS)), -10.0, dtype=np.float32)
    out[np.arange(len(path)), path] = -0.01
    return out


def test_collapses_repeats_drops_blanks_and_joins_pieces() -> None:
    b = BLANK
    path = [b, 0, 0, b, 1, b, b, 2, 2, 3, b, b]
    words = greedy_words(_logprobs(path), TOKENS, frame_seconds=0.04)
    assert text_of(words) == "hello world"
    assert [(w.word, round(w.start, 2), round(w.end, 2)) for w in words] == [
        ("hello", 0.04, 0.2),  # frames 1..4
        ("world", 0.28, 0.4),  # frames 7..9
    ]


def test_repeated_token_separated_by_blank_is_emitted_twice() -> None:
    b = BLANK
    words = greedy_words(_logprobs([4, 5, b, 5, 4, 5]), TOKENS, 0.04)
    assert [w.word for w in words] == ["aa", "a"]


def test_special_tokens_and_empty_input() -> None:
    assert text_of(greedy_words(_logprobs([6, BLANK, 0, 6]), TOKENS, 0.04)) == "he"
    assert greedy_words(np.zeros((0, len(TOKENS)), dtype=np.float32), TOKENS, 0.04) == []
    assert greedy_words(_logprobs([BLANK] * 5), TOKENS, 0.04) == []


def test_segments_split_at_pauses_and_length() -> None:
    words = [Word("a", 0.0, 0.3), Word("b", 0.4, 0.6), Word("c", 2.0, 2.2), Word("d", 2.3, 2.5)]
    segments = segments_of(words, pause_s=0.8)
    assert [(s.text, s.start, s.end) for s in segments] == [("a b", 0.0, 0.6), ("c d", 2.0, 2.5)]
    long = [Word(str(i), i * 0.5, i * 0.5 + 0.4) for i in range(10)]
    assert [s.text for s in segments_of(long, max_s=2.0)] == ["0 1 2 3", "4 5 6 7", "8 9"]


def test_a_pause_ends_a_word_without_a_boundary_token() -> None:
    # "a", 8 blank frames (0.32 s at 40 ms), "a": two words; with 2 blank frames, one word.
    b = BLANK
    paused = greedy_words(_logprobs([4, 5, *[b] * 8, 5]), TOKENS, 0.04)
    assert [(w.word, round(w.start, 2), round(w.end, 2)) for w in paused] == [
        ("a", 0.04, 0.08),
        ("a", 0.4, 0.44),
    ]
    assert [w.word for w in greedy_words(_logprobs([4, 5, b, b, 5]), TOKENS, 0.04)] == ["aa"]
    assert [w.word for w in greedy_words(_logprobs([4, 5, *[b] * 8, 5]), TOKENS, 0.04, 1.0)] == [
        "aa"
    ]


def test_words_count_their_tokens_and_segments_average_over_tokens() -> None:
    b = BLANK
    # "hello" is two tokens (▁he, llo), "a" one (after a lone ▁, which is not a token of a word).
    words = greedy_words(_logprobs([0, b, 1, b, 4, 5]), TOKENS, 0.04)
    assert [(w.word, w.tokens, round(w.logprob, 4)) for w in words] == [
        ("hello", 2, -0.02),
        ("a", 1, -0.01),
    ]
    assert [w.shifted(1.0).tokens for w in words] == [2, 1]
    (segment,) = segments_of(words)
    assert round(segment.avg_logprob, 4) == -0.01  # -0.03 over 3 tokens, not over 2 words
