"""Output vocabularies: characters (``▁`` word boundary, a-z, apostrophe) or sentencepiece BPE.

Token ids ``0..V-1`` are the vocabulary; the CTC blank is id ``V`` (last), as in NeMo.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from kubescribe_modeling.errors import ModelingError

WORD_BOUNDARY = "\u2581"
BLANK_SYMBOL = "<blk>"
CHAR_TOKENS: tuple[str, ...] = (WORD_BOUNDARY, *"abcdefghijklmnopqrstuvwxyz", "'")


class Vocabulary(Protocol):
    tokens: tuple[str, ...]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


def is_special(token: str) -> bool:
    """``<s>``, ``</s>``, ``<unk>``, ``<pad>``…: control tokens that are not text."""
    return len(token) > 2 and token.startswith("<") and token.endswith(">")


def tokens_to_text(tokens: Iterable[str]) -> str:
    """Join tokens (special ones dropped), ``▁`` becomes a space: the transcript."""
    text = "".join(t for t in tokens if not is_special(t))
    return " ".join(text.replace(WORD_BOUNDARY, " ").split())


class CharVocabulary:
    """Characters of normalised text; a space becomes ``▁``."""

    def __init__(self, tokens: Sequence[str] = CHAR_TOKENS) -> None:
        self.tokens = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @property
    def blank(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        spaced = WORD_BOUNDARY.join(text.split())
        try:
            return [self._ids[c] for c in spaced]
        except KeyError as exc:
            raise ModelingError(
                f"character {exc.args[0]!r} is not in the vocabulary (normalise the text first)"
            ) from exc

    def decode(self, ids: Iterable[int]) -> str:
        return tokens_to_text(self.tokens[i] for i in ids)


class BpeVocabulary:
    """A sentencepiece model; its pieces (``▁`` starts a word) are the tokens."""

    def __init__(self, model_file: Path) -> None:
        import sentencepiece as spm

        self.model_file = model_file
        self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.tokens = tuple(self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size()))

    @property
    def blank(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = self._sp.encode(" ".join(text.split()))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return tokens_to_text(self.tokens[i] for i in ids)


def train_bpe(texts: Iterable[str], size: int, prefix: Path) -> Path:
    """Train a unigram sentencepiece model on ``texts``; returns the ``.model`` file."""
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_prefix=str(prefix),
            vocab_size=size,
            model_type="unigram",
            character_coverage=1.0,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            minloglevel=2,
        )
    except RuntimeError as exc:  # sentencepiece reports a bad size this way
        raise ModelingError(f"cannot train a {size}-piece BPE vocabulary: {exc}") from exc
    return prefix.with_suffix(".model")


def tokens_file_text(tokens: Sequence[str]) -> str:
    """``tokens.txt``/``vocab.txt``: ``symbol id`` per line, ``<blk>`` last."""
    lines = [f"{t} {i}" for i, t in enumerate(tokens)]
    lines.append(f"{BLANK_SYMBOL} {len(tokens)}")
    return "\n".join(lines) + "\n"
