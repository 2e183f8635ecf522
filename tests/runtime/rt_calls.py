"""Synthetic phone calls for the realtime tests: test-set sentences separated by pauses, under
stationary background noise at a chosen SNR, with each sentence's true speech boundaries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
TESTSET = ROOT / "examples" / "testset"
SR = 16000
FRAME = 320  # 20 ms


@dataclass(frozen=True)
class Sentence:
    audio: npt.NDArray[np.float32]
    text: str


@dataclass(frozen=True)
class Call:
    samples: npt.NDArray[np.float32]
    truth: list[tuple[float, float]]  # each sentence's speech (seconds)
    texts: list[str]


def sentences(indices: list[int]) -> list[Sentence]:
    rows = [json.loads(line) for line in (TESTSET / "manifest.jsonl").read_text().splitlines()]
    out = []
    for i in indices:
        audio, rate = sf.read(TESTSET / rows[i]["audio"], dtype="float32")
        assert rate == SR
        out.append(Sentence(audio, rows[i]["text"]))
    return out


def speech_bounds(
    clean: npt.NDArray[np.float32], below_peak_db: float = 30.0
) -> tuple[float, float]:
    """First and last 20 ms frame of a clean recording within ``below_peak_db`` of its loudest."""
    n = len(clean) // FRAME
    level = 10 * np.log10(np.mean(clean[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - below_peak_db)
    return loud[0] * FRAME / SR, (loud[-1] + 1) * FRAME / SR


def noise(kind: str, n: int, seed: int) -> npt.NDArray[np.float64]:
    """Unit-power stationary noise: white, pink (1/f) or brown (1/f²)."""
    white = np.random.default_rng(seed).standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        power = {"pink": 0.5, "brown": 1.0}[kind]
        spectrum /= (np.arange(len(spectrum)) + 1.0) ** power
        white = np.fft.irfft(spectrum, n)
    return white / np.sqrt(np.mean(white**2))


def make_call(
    parts: list[Sentence],
    snr_db: float,
    kind: str,
    pauses_s: list[float],
    seed: int = 0,
    lead_s: float = 1.0,
) -> Call:
    pieces = [np.zeros(int(lead_s * SR), np.float32)]
    truth = []
    t = lead_s
    for sentence, pause in zip(parts, pauses_s, strict=True):
        start, end = speech_bounds(sentence.audio)
        truth.append((t + start, t + end))
        pieces += [sentence.audio, np.zeros(int(pause * SR), np.float32)]
        t += len(sentence.audio) / SR + pause
    clean = np.concatenate(pieces)
    speech = np.concatenate([clean[int(a * SR) : int(b * SR)] for a, b in truth])
    scale = np.sqrt(np.mean(speech.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    noisy = clean + scale * noise(kind, len(clean), seed)
    return Call(noisy.astype(np.float32), truth, [s.text for s in parts])
