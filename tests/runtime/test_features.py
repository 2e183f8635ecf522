"""kubescribe's log-mel equals onnx-asr's NeMo preprocessor (contract 2: same features, same
transcript on one artifact)."""

from __future__ import annotations

import subprocess
import tempfile
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import onnx_asr.preprocessors
import pytest
import soundfile as sf
import soxr
from kubescribe_runtime.features import (
    log_mel,
    log_mel_batch,
    mel_filterbank,
    num_frames,
)
from kubescribe_runtime.manifest import NemoLogMelFrontend
from onnx_asr.preprocessors.numpy_preprocessor import NemoPreprocessorNumpy
from onnx_asr.preprocessors.preprocessor import OnnxPreprocessor

FRONTEND = NemoLogMelFrontend()
TOLERANCE = 1e-4
SR = 16000


def _speech() -> np.ndarray:
    """Real synthetic speech (espeak-ng) at 16 kHz, with its digital silences."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-w", str(path), "kubescribe serves speech models on kubernetes"],
            check=True,
        )
        data, rate = sf.read(path, dtype="float32")
    return np.asarray(soxr.resample(data, rate, SR), dtype=np.float32)


def _waveform(kind: str, n: int, seed: int = 0) -> np.ndarray:
    if kind == "speech":
        return _speech()
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    if kind == "tone+noise":
        w = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    elif kind == "chirp":
        # Not in the parity table: a pure synthetic sweep leaves mel bins near float32's
        # rounding floor, where normalisation amplifies rounding; onnx-asr's own numpy and ONNX
        # backends then disagree by 5e-4 (and a float32 torch NeMo differs from both as much).
        sweep = np.sin(2 * np.pi * (100 + 3000 * t / max(t[-1], 1e-3)) * t)
        w = 0.5 * sweep + 1e-3 * rng.standard_normal(n)
    elif kind == "silence-padded":
        w = np.zeros(n)
        mid = slice(n // 3, 2 * n // 3)
        w[mid] = 0.2 * rng.standard_normal(mid.stop - mid.start)
    elif kind == "quiet-noise":
        w = 3e-3 * rng.standard_normal(n)
    else:  # pragma: no cover - test table typo
        raise AssertionError(kind)
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def onnx_asr_preprocessors() -> dict[str, object]:
    return {
        "numpy": NemoPreprocessorNumpy("nemo80"),
        "onnx": OnnxPreprocessor("nemo80", {}),
    }


def test_filterbank_equals_onnx_asr_nemo80_table() -> None:
    data_dir = files(onnx_asr.preprocessors).joinpath("data").joinpath("fbanks.npz")
    with as_file(data_dir) as path, np.load(path) as data:
        reference = data["nemo80"]  # [257, 80], librosa slaney
    ours = mel_filterbank(SR, 512, 80)
    assert ours.shape == (80, 257)
    np.testing.assert_allclose(ours, reference.T, atol=1e-7)


@pytest.mark.parametrize(
    ("kind", "n"),
    [
        ("tone+noise", 400),
        ("tone+noise", 1601),
        ("tone+noise", 16000),
        ("silence-padded", 16037),
        ("quiet-noise", 8000),
        ("tone+noise", 5 * SR + 123),
        ("speech", 0),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "onnx"])
def test_log_mel_equals_onnx_asr(
    onnx_asr_preprocessors: dict[str, object], backend: str, kind: str, n: int
) -> None:
    waveform = _waveform(kind, n)
    n = len(waveform)
    ours = log_mel(waveform, FRONTEND)
    preprocess = onnx_asr_preprocessors[backend]
    theirs, lengths = preprocess(waveform[None].copy(), np.array([n], dtype=np.int64))  # type: ignore[operator]
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape[1:] == (80, num_frames(n, FRONTEND) + 1)
    assert int(lengths[0]) == num_frames(n, FRONTEND)
    assert np.abs(ours - theirs[0]).max() <= TOLERANCE
    # the column beyond the valid length is zero, the valid ones are normalised
    assert not ours[:, num_frames(n, FRONTEND) :].any()
    valid = ours[:, : num_frames(n, FRONTEND)]
    np.testing.assert_allclose(valid.mean(axis=1), 0.0, atol=1e-4)


def test_batch_equals_onnx_asr_batch(onnx_asr_preprocessors: dict[str, object]) -> None:
    lengths = [16000, 4321, 11111]
    waves = [_waveform("tone+noise", n, seed=i) for i, n in enumerate(lengths)]
    padded = np.zeros((len(waves), max(lengths)), dtype=np.float32)
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    ours, our_lengths = log_mel_batch(waves, FRONTEND)
    theirs, their_lengths = onnx_asr_preprocessors["onnx"](  # type: ignore[operator]
        padded, np.array(lengths, dtype=np.int64)
    )
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(our_lengths, their_lengths)
    assert np.abs(ours - theirs).max() <= TOLERANCE


def test_changed_parameters_change_features() -> None:
    """The comparison above is not vacuous: a wrong pre-emphasis is far outside the tolerance."""
    waveform = _waveform("chirp", 16000)
    wrong = NemoLogMelFrontend(preemph=0.0)
    assert np.abs(log_mel(waveform, FRONTEND) - log_mel(waveform, wrong)).max() > 0.1


def test_short_and_invalid_inputs() -> None:
    assert num_frames(0, FRONTEND) == 0
    assert log_mel(np.zeros(10, dtype=np.float32), FRONTEND).shape == (80, 1)
    one_frame = log_mel(_waveform("tone+noise", 200), FRONTEND)
    assert np.isfinite(one_frame).all()
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 100), dtype=np.float32), FRONTEND)
    empty, empty_lengths = log_mel_batch([], FRONTEND)
    assert empty.shape == (0, 80, 0) and empty_lengths.shape == (0,)
