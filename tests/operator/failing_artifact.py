"""A new version that fails part of its requests, for real: the demo artifact with its ONNX graph
wrapped so that onnxruntime raises while it runs a batch holding a window longer than
``FAILS_LONGER_THAN_S`` (a Reshape whose target shape grows by one element then; a model with a
length limit of its own, like a positional encoding). Shorter audio is transcribed exactly as
the demo model does, so the warm-up and the reference clips pass and the runtime answers 500 to
the long requests only. The runtime has no fault-injection flag; this is a model that fails."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
from kubescribe_runtime.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
DEMO_ARTIFACT = ROOT / "examples" / "models" / "demo"
SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
FAILS_LONGER_THAN_S = 5.0
HOP_S = 0.01  # one feature frame (the demo model's `length` input counts them)
# The demo's reference clips last 2.3-3.8 s and the warm-up 1 s: all shorter than the limit.
SHORT_S = 3.0
LONG_S = 9.0


def fail_on_long_inputs(model: onnx.ModelProto, max_frames: int) -> onnx.ModelProto:
    """`model` with its output `logprobs` unchanged for batches whose longest `length` is at
    most `max_frames`, and a run-time error (Reshape of 2 elements to 3) beyond."""
    graph = model.graph
    (producer,) = [node for node in graph.node if "logprobs" in node.output]
    producer.output[list(producer.output).index("logprobs")] = "ks_logprobs"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(max_frames, dtype=np.int64), "ks_max_frames"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "ks_two"),
            numpy_helper.from_array(np.zeros(2, dtype=np.float32), "ks_pair"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("ReduceMax", ["length"], ["ks_longest"], keepdims=0),
            helper.make_node("Greater", ["ks_longest", "ks_max_frames"], ["ks_too_long"]),
            helper.make_node("Cast", ["ks_too_long"], ["ks_extra"], to=TensorProto.INT64),
            helper.make_node("Add", ["ks_two", "ks_extra"], ["ks_shape"]),
            helper.make_node("Reshape", ["ks_pair", "ks_shape"], ["ks_probe"]),
            helper.make_node("ReduceSum", ["ks_probe"], ["ks_zero"], keepdims=0),
            helper.make_node("Add", ["ks_logprobs", "ks_zero"], ["logprobs"]),
        ]
    )
    onnx.checker.check_model(model)
    return model


def failing_artifact(directory: Path, version: str = "2.0.1-fails-long") -> str:
    """A copy of the demo artifact in ``directory`` whose model.onnx fails audio longer than
    FAILS_LONGER_THAN_S, its manifest's digest and version updated. Returns the sha256 of its
    kubescribe.yaml (``model.sha256``)."""
    demo = ArtifactManifest.load(DEMO_ARTIFACT)
    directory.mkdir(parents=True, exist_ok=True)
    for name in demo.files:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_ARTIFACT / name, directory / name)
    path = directory / "model.onnx"
    wrapped = fail_on_long_inputs(onnx.load(path), round(FAILS_LONGER_THAN_S / HOP_S))
    onnx.save(wrapped, path)
    files = {**demo.files, "model.onnx": sha256_file(path)}
    manifest = demo.model_copy(update={"files": files, "version": version})
    (directory / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    assert ArtifactManifest.load(directory).files["model.onnx"] == sha256_file(path)
    return sha256_file(directory / MANIFEST_NAME)


def clip(seconds: float) -> bytes:
    """A WAV file of the sample's speech, repeated to `seconds`."""
    audio, rate = sf.read(SAMPLE, dtype="float32")
    repeated = np.tile(audio, int(seconds * rate) // len(audio) + 1)[: int(seconds * rate)]
    out = io.BytesIO()
    sf.write(out, repeated, rate, format="WAV")
    return out.getvalue()
