"""NeMo's log-mel front end, in numpy (no torch).

This reproduces NeMo's ``AudioToMelSpectrogramPreprocessor`` (``FilterbankFeatures``) as NeMo
CTC checkpoints are trained with it, and as onnx-asr's ``nemo80`` preprocessor implements it:

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``), then zero beyond the valid length;
2. STFT with ``center=True`` and zero ("constant") padding of ``n_fft // 2`` on both sides,
   ``n_fft=512``, ``hop=160``, a symmetric Hann window of 400 samples
   (``torch.hann_window(400, periodic=False)``) zero-padded to 512 in the middle;
3. power spectrum ``|X|^2``;
4. a Slaney-style mel filterbank (librosa ``mel(norm="slaney", htk=False)``, fmin 0, fmax sr/2);
5. ``log(mel + 2^-24)``;
6. per-feature normalisation over the valid frames: mean, unbiased std,
   ``(x - mean) / (std + 1e-5)`` (with ``stats_frames``, the statistics come from those frames
   only — the speech frames of a window with long non-speech, which would otherwise dominate
   the mean and shrink the std; every valid frame is still normalised with them);
7. frames at and beyond the valid length set to zero.

A waveform of ``n`` samples yields ``n // hop + 1`` frames of which the first ``n // hop`` are
valid (NeMo's ``get_seq_len``); the valid count is what the acoustic model's ``length`` input gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from kubescribe_runtime.manifest import NemoLogMelFrontend

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# NeMo's normalize_batch adds this to the standard deviation.
_STD_EPS = 1e-5


def num_frames(num_samples: int, frontend: NemoLogMelFrontend) -> int:
    """Valid feature frames for ``num_samples`` samples (the model's ``length`` input)."""
    return max(int(num_samples), 0) // frontend.hop_length


def _hz_to_mel_slaney(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    logarithmic = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, logarithmic, linear)


def _mel_to_hz_slaney(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = mel * f_sp
    logarithmic = min_log_hz * np.exp(logstep * (mel - min_log_mel))
    return np.where(mel >= min_log_mel, logarithmic, linear)


@lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> FloatArray:
    """Slaney mel filterbank ``[n_mels, n_fft // 2 + 1]`` (librosa's default, norm="slaney")."""
    top = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(
        _hz_to_mel_slaney(np.array(fmin)), _hz_to_mel_slaney(np.array(top)), n_mels + 2
    )
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, None]
    result = weights.astype(np.float32)
    result.setflags(write=False)
    return result


@lru_cache(maxsize=8)
def _window(win_length: int, n_fft: int) -> npt.NDArray[np.float64]:
    # Symmetric Hann (torch.hann_window(periodic=False)), centred in n_fft as torch.stft does.
    window = np.hanning(win_length)
    left = (n_fft - win_length) // 2
    padded = np.zeros(n_fft)
    padded[left : left + win_length] = window
    padded.setflags(write=False)
    return padded


def _power_spectrum(
    waveform: FloatArray, frontend: NemoLogMelFrontend, chunk_frames: int = 256
) -> npt.NDArray[np.float32]:
    """``[frames, n_fft // 2 + 1]`` power spectrum of the centred, zero-padded STFT.

    Computed in float64 (as onnx-asr's numpy preprocessor), ``chunk_frames`` at a time so that
    the float64 temporaries stay small whatever the length.
    """
    half = frontend.n_fft // 2
    padded = np.pad(waveform.astype(np.float64), (half, half))
    frames = np.lib.stride_tricks.sliding_window_view(padded, frontend.n_fft)[
        :: frontend.hop_length
    ]
    window = _window(frontend.win_length, frontend.n_fft)
    power = np.empty((frames.shape[0], half + 1), dtype=np.float32)
    for start in range(0, frames.shape[0], chunk_frames):
        spectrum = np.fft.rfft(frames[start : start + chunk_frames] * window, axis=-1)
        power[start : start + chunk_frames] = spectrum.real**2 + spectrum.imag**2
    return power


def log_mel(
    waveform: npt.NDArray[np.floating],
    frontend: NemoLogMelFrontend,
    sample_rate: int = 16000,
    stats_frames: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """Normalised log-mel features ``[n_mels, num_samples // hop + 1]`` of a mono waveform.

    ``stats_frames`` (a boolean per frame) selects the frames the normalisation statistics are
    taken from; ``None`` (NeMo's behaviour) or fewer than two selected valid frames: all valid
    frames.
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D), got shape {samples.shape}")
    valid = num_frames(samples.shape[0], frontend)
    if frontend.preemph:
        emphasised = samples.copy()
        emphasised[1:] -= np.float32(frontend.preemph) * samples[:-1]
        samples = emphasised
    power = _power_spectrum(samples, frontend)
    fbank = mel_filterbank(sample_rate, frontend.n_fft, frontend.n_mels)
    mel = power @ fbank.T  # [frames, n_mels]
    logmel = np.log(mel + np.float32(frontend.log_zero_guard)).astype(np.float32)
    features = np.zeros_like(logmel)
    if valid > 0:
        used = logmel[:valid]
        chosen = used
        if stats_frames is not None:
            selected = np.asarray(stats_frames, dtype=bool)[:valid]
            if int(selected.sum()) > 1:
                chosen = used[np.flatnonzero(selected)]
        count = chosen.shape[0]
        mean = chosen.mean(axis=0, dtype=np.float64)
        if count > 1:
            var = ((chosen - mean) ** 2).sum(axis=0, dtype=np.float64) / (count - 1)
            std = np.sqrt(var)
        else:
            std = np.zeros_like(mean)  # NeMo: NaN std of one frame is filled with 0
        features[:valid] = ((used - mean) / (std + _STD_EPS)).astype(np.float32)
    return np.ascontiguousarray(features.T)


def log_mel_batch(
    waveforms: Sequence[npt.NDArray[np.floating]],
    frontend: NemoLogMelFrontend,
    sample_rate: int = 16000,
) -> tuple[FloatArray, IntArray]:
    """Features of several waveforms, zero-padded: ``([N, n_mels, T_max], valid lengths [N])``.

    Equal to NeMo's batched computation: each utterance is normalised over its own valid frames,
    and every column beyond an utterance's valid length is zero.
    """
    if not waveforms:
        return np.zeros((0, frontend.n_mels, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    feats = [log_mel(w, frontend, sample_rate) for w in waveforms]
    longest = max(f.shape[1] for f in feats)
    batch = np.zeros((len(feats), frontend.n_mels, longest), dtype=np.float32)
    for i, f in enumerate(feats):
        batch[i, :, : f.shape[1]] = f
    lengths = np.array([num_frames(len(w), frontend) for w in waveforms], dtype=np.int64)
    return batch, lengths
