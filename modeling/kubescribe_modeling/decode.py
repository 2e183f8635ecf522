"""Greedy CTC decoding and word error rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def greedy_ids(logprobs: npt.NDArray[np.floating], length: int, blank: int) -> list[int]:
    """Best path of one utterance ``[T', V+1]``: collapse repeats, then drop blanks."""
    best = np.asarray(logprobs)[:length].argmax(axis=-1)
    ids: list[int] = []
    previous = -1
    for token in best.tolist():
        if token != previous and token != blank:
            ids.append(int(token))
        previous = token
    return ids


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (jiwer): total edits over total reference words."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses differ in length")
    if not references:
        return 0.0
    refs = [r if r.strip() else "<empty>" for r in references]
    return float(jiwer.wer(list(refs), [h if h.strip() else "" for h in hypotheses]))
