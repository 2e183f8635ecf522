from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.vocab import (
    CHAR_TOKENS,
    BpeVocabulary,
    CharVocabulary,
    tokens_file_text,
    tokens_to_text,
    train_bpe,
)


def test_char_vocabulary_round_trips_with_word_boundary() -> None:
    vocab = CharVocabulary()
    ids = vocab.encode("it's  ok")
    assert [vocab.tokens[i] for i in ids] == ["i", "t", "'", "s", "▁", "o", "k"]
    assert vocab.decode(ids) == "it's ok"
    assert vocab.blank == len(CHAR_TOKENS) == 28


def test_special_tokens_are_not_text() -> None:
    assert tokens_to_text(["<s>", "▁he", "llo", "<unk>", "▁world", "</s>"]) == "hello world"


def test_unknown_characters_are_refused() -> None:
    with pytest.raises(ModelingError, match="not in the vocabulary"):
        CharVocabulary().encode("café")


def test_tokens_file_puts_blank_last() -> None:
    lines = tokens_file_text(CHAR_TOKENS).splitlines()
    assert lines[0] == "▁ 0"
    assert lines[-1] == "<blk> 28"
    assert len(lines) == 29


def test_impossible_bpe_size_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelingError, match="BPE vocabulary"):
        train_bpe(["tiny text"] * 5, 500, tmp_path / "bpe")


def test_bpe_vocabulary_trains_and_round_trips(tmp_path: Path) -> None:
    texts = ["the quick brown fox jumps over the lazy dog", "hello world again"] * 50
    model = train_bpe(texts, 30, tmp_path / "bpe")
    vocab = BpeVocabulary(model)
    assert len(vocab.tokens) == 30
    assert vocab.blank == 30
    assert vocab.decode(vocab.encode("the lazy fox")) == "the lazy fox"
