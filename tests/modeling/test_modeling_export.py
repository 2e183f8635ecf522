from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from kubescribe_modeling.artifact import ExportReport, parity_inputs
from kubescribe_modeling.checkpoint import Checkpoint
from kubescribe_modeling.errors import ParityError
from kubescribe_modeling.evaluate import evaluate_artifact, read_tokens
from kubescribe_modeling.model import subsampled_lengths
from kubescribe_modeling.onnx_export import parity, read_metadata, run_onnx
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.manifest import ArtifactManifest, NemoLogMelFrontend, sha256_file


def test_artifact_has_every_file_of_the_contract(tiny_artifact: ExportReport) -> None:
    names = {p.name for p in tiny_artifact.out_dir.iterdir()}
    assert names == {
        "model.onnx", "model.int8.onnx", "tokens.txt", "vocab.txt", "config.json",
        "kubescribe.yaml",
    }  # fmt: skip


def test_onnx_graph_has_the_nemo_ctc_layout(tiny_artifact: ExportReport) -> None:
    graph = onnx.load(str(tiny_artifact.out_dir / "model.onnx")).graph
    inputs = {i.name: i.type.tensor_type for i in graph.input}
    assert list(inputs) == ["audio_signal", "length"]
    assert inputs["audio_signal"].elem_type == onnx.TensorProto.FLOAT
    assert inputs["length"].elem_type == onnx.TensorProto.INT64
    dims = inputs["audio_signal"].shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 80 and dims[2].dim_param
    assert [o.name for o in graph.output] == ["logprobs"]


def test_metadata_is_what_sherpa_onnx_needs(tiny_artifact: ExportReport) -> None:
    tokens = read_tokens(tiny_artifact.out_dir / "tokens.txt")
    for name in ("model.onnx", "model.int8.onnx"):
        meta = read_metadata(tiny_artifact.out_dir / name)
        assert meta["vocab_size"] == str(len(tokens))
        assert meta["subsampling_factor"] == "4"
        assert meta["normalize_type"] == "per_feature"
        assert meta["model_type"] == "EncDecCTCModelBPE"


def test_tokens_vocab_and_onnx_asr_config(tiny_artifact: ExportReport) -> None:
    out = tiny_artifact.out_dir
    tokens = read_tokens(out / "tokens.txt")
    assert tokens[0] == "▁" and tokens[-1] == "<blk>" and len(tokens) == 29
    assert (out / "vocab.txt").read_text() == (out / "tokens.txt").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config == {"model_type": "nemo-conformer-ctc", "features_size": 80,
                      "subsampling_factor": 4}  # fmt: skip


def test_dynamic_batch_and_time_axes(tiny_artifact: ExportReport) -> None:
    for batch, frames in [(1, 37), (3, 412)]:
        feats = np.random.default_rng(0).standard_normal((batch, 80, frames)).astype(np.float32)
        lengths = np.full(batch, frames, dtype=np.int64)
        out = run_onnx(tiny_artifact.out_dir / "model.onnx", feats, lengths)
        assert out.shape == (batch, (frames + 3) // 4, 29)
        np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, atol=1e-4)


def test_parity_is_measured_and_small(tiny_artifact: ExportReport) -> None:
    assert 0.0 <= tiny_artifact.parity_max_abs_diff < 1e-3


def test_parity_fails_for_a_different_model(
    tiny_artifact: ExportReport, tiny_checkpoint: Checkpoint
) -> None:
    other = tiny_checkpoint.build_model()
    with torch.no_grad():
        other.head.bias.add_(torch.linspace(0, 1, other.head.bias.numel()))
    inputs = parity_inputs(None, NemoLogMelFrontend())
    with pytest.raises(ParityError, match="differ by"):
        parity(other, tiny_artifact.out_dir / "model.onnx", inputs,
               subsampled_lengths(inputs[1]), 1e-3)  # fmt: skip


def test_manifest_lists_every_file_digest_and_the_test_wer(
    tiny_artifact: ExportReport, tiny_testset: Path
) -> None:
    out = tiny_artifact.out_dir
    manifest = ArtifactManifest.load(out)
    assert set(manifest.files) == {p.name for p in out.iterdir()} - {"kubescribe.yaml"}
    for name, digest in manifest.files.items():
        assert sha256_file(out / name) == digest
    assert manifest.vocab_size == 28 and manifest.subsampling_factor == 4
    measured = {e.model_file: e.wer for e in manifest.evaluation}
    assert set(measured) == {"model.onnx", "model.int8.onnx"}
    again = evaluate_artifact(out, tiny_testset)
    assert measured["model.onnx"] == pytest.approx(again.wer, abs=1e-4)
    load_artifact(out)  # the runtime accepts it (digests verified)


def test_int8_model_is_smaller_and_close(tiny_artifact: ExportReport) -> None:
    out = tiny_artifact.out_dir
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    feats = np.random.default_rng(1).standard_normal((1, 80, 200)).astype(np.float32)
    lengths = np.array([200], dtype=np.int64)
    fp32 = run_onnx(out / "model.onnx", feats, lengths)
    int8 = run_onnx(out / "model.int8.onnx", feats, lengths)
    assert np.abs(fp32 - int8).max() < 1.0
    assert not np.array_equal(fp32, int8)


def test_runtime_pipeline_and_plain_onnxruntime_agree(
    tiny_artifact: ExportReport, tiny_testset: Path
) -> None:
    # The plain path has no voice activity detection; the runtime's (Silero, on by default)
    # rightly drops the tiny corpus's tone clips as non-speech, so compare without it.
    runtime = evaluate_artifact(tiny_artifact.out_dir, tiny_testset, vad="off")
    plain = evaluate_artifact(tiny_artifact.out_dir, tiny_testset, use_runtime=False)
    assert (runtime.pipeline, plain.pipeline) == ("kubescribe-runtime", "onnxruntime")
    assert runtime.hypotheses == plain.hypotheses
    assert runtime.utterances == 4 and runtime.audio_seconds > 0
