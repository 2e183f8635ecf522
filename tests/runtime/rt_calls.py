"""Synthetic phone calls for the realtime tests; the builder lives in ``bench.calls`` (the
streaming benchmark shares it). Sentences are picked from the test set by index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import calls
from bench.calls import Call, noise, speech_bounds
from bench.common import Utterance, read_audio, read_testset

ROOT = Path(__file__).resolve().parents[2]
SR = 16000

__all__ = ["ROOT", "SR", "Call", "Sentence", "make_call", "noise", "sentences", "speech_bounds"]


@dataclass(frozen=True)
class Sentence:
    audio: npt.NDArray[np.float32]
    text: str
    utterance: Utterance


def sentences(indices: list[int]) -> list[Sentence]:
    everything = read_testset()
    return [
        Sentence(read_audio(everything[i].audio), everything[i].text, everything[i])
        for i in indices
    ]


def make_call(
    parts: list[Sentence], snr_db: float, kind: str, pauses_s: list[float], seed: int = 0
) -> Call:
    return calls.make_call([p.utterance for p in parts], pauses_s, snr_db, kind, seed)
