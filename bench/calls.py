"""Synthetic phone calls: test-set sentences separated by pauses, under stationary background
noise at a chosen SNR, with each sentence's true speech boundaries. Used by ``bench.streaming``
and the realtime tests (turn detection on noisy calls)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.common import SAMPLE_RATE, Utterance, read_audio

FRAME = 320  # 20 ms


@dataclass(frozen=True)
class Call:
    samples: npt.NDArray[np.float32]
    truth: list[tuple[float, float]]  # each sentence's speech (seconds)
    texts: list[str]


def speech_bounds(
    clean: npt.NDArray[np.float32], below_peak_db: float = 30.0
) -> tuple[float, float]:
    """First and last 20 ms frame of a clean recording within ``below_peak_db`` of its loudest."""
    n = len(clean) // FRAME
    level = 10 * np.log10(np.mean(clean[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - below_peak_db)
    return loud[0] * FRAME / SAMPLE_RATE, (loud[-1] + 1) * FRAME / SAMPLE_RATE


def noise(kind: str, n: int, seed: int) -> npt.NDArray[np.float64]:
    """Unit-power stationary noise: white, pink (1/f) or brown (1/f²)."""
    white = np.random.default_rng(seed).standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        spectrum /= (np.arange(len(spectrum)) + 1.0) ** {"pink": 0.5, "brown": 1.0}[kind]
        white = np.fft.irfft(spectrum, n)
    return white / np.sqrt(np.mean(white**2))


def make_call(
    utterances: Sequence[Utterance],
    pauses_s: Sequence[float],
    snr_db: float | None = None,
    kind: str = "white",
    seed: int = 0,
    lead_s: float = 1.0,
) -> Call:
    """The utterances in order, ``lead_s`` of silence first and ``pauses_s[i]`` after each;
    background noise at ``snr_db`` (speech power over noise power) unless None."""
    pieces = [np.zeros(int(lead_s * SAMPLE_RATE), np.float32)]
    truth = []
    t = lead_s
    for utterance, pause in zip(utterances, pauses_s, strict=True):
        audio = read_audio(utterance.audio)
        start, end = speech_bounds(audio)
        truth.append((t + start, t + end))
        pieces += [audio, np.zeros(int(pause * SAMPLE_RATE), np.float32)]
        t += len(audio) / SAMPLE_RATE + pause
    clean = np.concatenate(pieces)
    if snr_db is None:
        return Call(clean, truth, [u.text for u in utterances])
    speech = np.concatenate([clean[int(a * SAMPLE_RATE) : int(b * SAMPLE_RATE)] for a, b in truth])
    scale = np.sqrt(np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    noisy = clean + scale * noise(kind, len(clean), seed)
    return Call(noisy.astype(np.float32), truth, [u.text for u in utterances])
