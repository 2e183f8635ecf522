"""Small, self-made artifacts and audio for the runtime's unit tests.

The "tone model" is a real CTC ONNX model in the NeMo layout that can be reasoned about: it
emits ``▁low`` while low mel bins are loud, ``▁high`` while high mel bins are loud, and the blank
otherwise. Audio of tones therefore has a known transcript and known word timings.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
from kubescribe_runtime.manifest import (
    MANIFEST_NAME,
    ArtifactManifest,
    WaveformFrontend,
    sha256_file,
)
from onnx import TensorProto, helper, numpy_helper

SR = 16000
TONE_TOKENS = ["▁low", "▁high", "<blk>"]
LOW_HZ = 300.0
HIGH_HZ = 3000.0


def _save(model: onnx.ModelProto, path: Path, vocab_size: int, subsampling: int) -> None:
    for key, value in {
        "vocab_size": str(vocab_size),
        "subsampling_factor": str(subsampling),
        "normalize_type": "per_feature",
        "model_type": "EncDecCTCModelBPE",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, path)


def tone_model(path: Path, subsampling: int = 4) -> None:
    """audio_signal [N, 80, T] → logprobs [N, ceil(T/sub), 3]."""
    weights = np.zeros((80, 3), dtype=np.float32)
    weights[5:15, 0] = 2.0  # ~200-450 Hz: the low tone
    weights[50:60, 1] = 2.0  # ~2.4-3.5 kHz: the high tone
    bias = np.array([-6.0, -6.0, 4.0], dtype=np.float32)
    nodes = [
        helper.make_node("Transpose", ["audio_signal"], ["frames"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["frames", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], ["logits"]),
        helper.make_node("Slice", ["logits", "starts", "ends", "axes", "steps"], ["sub"]),
        helper.make_node("LogSoftmax", ["sub"], ["logprobs"], axis=-1),
    ]
    init = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
        numpy_helper.from_array(np.array([2**62], dtype=np.int64), "ends"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        numpy_helper.from_array(np.array([subsampling], dtype=np.int64), "steps"),
    ]
    graph = helper.make_graph(
        nodes,
        "tone-ctc",
        [
            helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, ["N", 80, "T"]),
            helper.make_tensor_value_info("length", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["N", "U", 3])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    _save(model, path, vocab_size=2, subsampling=subsampling)


def sign_waveform_model(path: Path) -> None:
    """audio_signal [N, samples] → logprobs [N, samples // 320, 3]: ``▁up`` while the 20 ms
    frame's mean is positive, ``▁down`` while negative (a wav2vec2-like 320-sample stride)."""
    kernel = np.full((1, 1, 320), 1.0 / 320, dtype=np.float32)
    proj = np.array([[[40.0]], [[-40.0]], [[0.0]]], dtype=np.float32)  # [3, 1, 1]
    bias = np.array([0.0, 0.0, 8.0], dtype=np.float32)
    nodes = [
        helper.make_node("Unsqueeze", ["audio_signal", "one"], ["x"]),
        helper.make_node("Conv", ["x", "K"], ["mean"], strides=[320]),
        helper.make_node("Conv", ["mean", "P", "B"], ["logits"]),
        helper.make_node("Transpose", ["logits"], ["frames"], perm=[0, 2, 1]),
        helper.make_node("LogSoftmax", ["frames"], ["logprobs"], axis=-1),
    ]
    init = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(kernel, "K"),
        numpy_helper.from_array(proj, "P"),
        numpy_helper.from_array(bias, "B"),
    ]
    graph = helper.make_graph(
        nodes,
        "sign-ctc",
        [
            helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, ["N", "S"]),
            helper.make_tensor_value_info("length", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["N", "U", 3])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    _save(model, path, vocab_size=2, subsampling=320)


def write_artifact(
    directory: Path,
    tokens: list[str],
    build: str = "tone",
    name: str = "tone-demo",
    version: str = "1.0.0",
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if build == "tone":
        tone_model(directory / "model.onnx")
        frontend: dict[str, object] = {}
        subsampling = 4
    else:
        sign_waveform_model(directory / "model.onnx")
        frontend = {"frontend": WaveformFrontend(normalize=False)}
        subsampling = 320  # samples per output frame
    (directory / "tokens.txt").write_text(
        "".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8"
    )
    (directory / "config.json").write_text(
        json.dumps({"model_type": "nemo-conformer-ctc", "features_size": 80}), encoding="utf-8"
    )
    files = {n: sha256_file(directory / n) for n in ("model.onnx", "tokens.txt", "config.json")}
    manifest = ArtifactManifest.model_validate(
        {
            "name": name,
            "version": version,
            "vocab_size": len(tokens) - 1,
            "subsampling_factor": subsampling,
            "files": files,
            **frontend,
        }
    )
    (directory / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return directory


def tone(hz: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def pause(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1e-3 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def tone_sentence(pattern: str, word_s: float = 0.4, gap_s: float = 0.4) -> np.ndarray:
    """``"lo hi lo"`` → tones separated by quiet pauses.

    Both tones must occur: the features are normalised per mel bin over the utterance, so a
    bin group that is never loud is pure normalised noise, which the tone model cannot tell
    from a tone.
    """
    assert {"lo", "hi"} <= set(pattern.split()), pattern
    parts = [pause(gap_s)]
    for i, word in enumerate(pattern.split()):
        parts.append(tone(LOW_HZ if word == "lo" else HIGH_HZ, word_s))
        parts.append(pause(gap_s, seed=i + 1))
    return np.concatenate(parts)


def encode(
    samples: np.ndarray, rate: int = SR, fmt: str = "WAV", subtype: str | None = None
) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()
