"""Waveform augmentation: gain, additive noise at a random SNR, a small synthetic reverb, and
the narrowband telephone channel.

Pure numpy: :func:`draw_augmentation` turns a seed into parameters, :func:`augment` applies
them, so a corpus entry is reproducible from its seed alone (and its planned telephone law).
The telephone channel (:func:`narrowband`) is what a call does to speech: sampled at 8 kHz
(nothing above 4 kHz survives) and coded with G.711 μ-law or A-law — the runtime's own codec
(``kubescribe_runtime.g711``), so training sees the very samples a call delivers — then
resampled back to the model's rate, as the runtime does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr
from kubescribe_runtime import g711

__all__ = [
    "TELEPHONE_RATE",
    "Augmentation",
    "augment",
    "draw_augmentation",
    "g711_round_trip",
    "narrowband",
    "reverb_impulse",
]

#: A telephone line's sample rate: G.711 carries 8,000 samples a second (a 4 kHz band).
TELEPHONE_RATE = g711.SAMPLE_RATE


@dataclass(frozen=True)
class Augmentation:
    gain_db: float
    snr_db: float | None  # None: no noise
    noise_color: float  # spectral slope exponent: 0 white, 1 pink, 2 brown
    rt60_s: float | None  # None: no reverb
    wet: float  # reverb mix
    pad_start_s: float
    pad_end_s: float
    seed: int
    telephone: g711.Law | None = None  # the call's codec, after the room and the noise


def draw_augmentation(
    seed: int, strength: float = 1.0, telephone: g711.Law | None = None
) -> Augmentation:
    """Random augmentation parameters; ``strength=0`` gives a clean, unpadded copy.

    ``telephone`` (chosen by the plan) adds the narrowband channel whatever the strength.
    """
    rng = np.random.default_rng(seed)
    noisy = strength > 0 and rng.random() < 0.75
    reverb = strength > 0 and rng.random() < 0.35
    return Augmentation(
        gain_db=float(rng.uniform(-12.0, 3.0)) * strength,
        snr_db=float(rng.uniform(8.0, 35.0)) if noisy else None,
        noise_color=float(rng.choice([0.0, 1.0, 2.0])),
        rt60_s=float(rng.uniform(0.1, 0.5)) if reverb else None,
        wet=float(rng.uniform(0.1, 0.4)),
        pad_start_s=float(rng.uniform(0.0, 0.3)) * strength,
        pad_end_s=float(rng.uniform(0.0, 0.3)) * strength,
        seed=seed,
        telephone=telephone,
    )


def reverb_impulse(rt60_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """An exponentially decaying noise impulse response (60 dB down after ``rt60_s``)."""
    n = max(1, int(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60_s)
    ir[0] = 0.0
    return (ir / (np.sqrt(np.sum(ir**2)) + 1e-12)).astype(np.float32)


def _colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if exponent == 0.0 or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spectrum /= freqs ** (exponent / 2.0)
    return np.fft.irfft(spectrum, n)


def augment(audio: np.ndarray, sample_rate: int, aug: Augmentation) -> np.ndarray:
    """Apply ``aug`` to mono float audio in [-1, 1]; the result is float32 and never clips."""
    rng = np.random.default_rng(aug.seed + 1)
    x = np.concatenate(
        [
            np.zeros(int(aug.pad_start_s * sample_rate), np.float32),
            audio.astype(np.float32),
            np.zeros(int(aug.pad_end_s * sample_rate), np.float32),
        ]
    )
    if aug.rt60_s is not None and x.size:
        ir = reverb_impulse(aug.rt60_s, sample_rate, rng)
        size = x.size + ir.size - 1
        nfft = 1 << (size - 1).bit_length()
        tail = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(ir, nfft), nfft)[: x.size]
        x = (1.0 - aug.wet) * x + aug.wet * tail.astype(np.float32)
    if aug.snr_db is not None and x.size:
        signal_power = float(np.mean(x**2)) + 1e-12
        noise = _colored_noise(x.size, aug.noise_color, rng)
        noise *= np.sqrt(signal_power / (10 ** (aug.snr_db / 10)) / (np.mean(noise**2) + 1e-12))
        x = x + noise.astype(np.float32)
    x = _limit(x * np.float32(10 ** (aug.gain_db / 20)))
    if aug.telephone is not None:
        x = _limit(narrowband(x, sample_rate, aug.telephone))
    return x.astype(np.float32)


def _limit(x: np.ndarray, ceiling: float = 0.99) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * np.float32(ceiling / peak) if peak > ceiling else x


def g711_round_trip(audio_8k: np.ndarray, law: g711.Law) -> np.ndarray:
    """8 kHz float audio coded and decoded with G.711 (``pcmu`` μ-law or ``pcma`` A-law)."""
    return g711.to_float(g711.from_float(audio_8k, law), law)


def narrowband(audio: np.ndarray, sample_rate: int, law: g711.Law) -> np.ndarray:
    """``audio`` as a phone call carries it: 8 kHz, G.711, back at ``sample_rate``, same length."""
    x = np.asarray(audio, dtype=np.float32)
    if x.size == 0:
        return x
    phone = soxr.resample(x, sample_rate, TELEPHONE_RATE, quality="HQ")
    back = soxr.resample(g711_round_trip(phone, law), TELEPHONE_RATE, sample_rate, quality="HQ")
    out = np.zeros(x.size, np.float32)
    out[: min(x.size, back.size)] = back[: x.size]
    return out
