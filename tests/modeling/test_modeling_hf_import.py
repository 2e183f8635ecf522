"""Import of tiny, randomly initialised Hugging Face CTC models (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.evaluate import evaluate_artifact, read_tokens
from kubescribe_modeling.hf_import import blank_last_order, import_hf_ctc
from kubescribe_modeling.onnx_export import run_onnx
from kubescribe_runtime.manifest import ArtifactManifest, WaveformFrontend

VOCAB = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4,
         **{c: 5 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}  # fmt: skip


def _tiny_model(kind: str, folder: Path) -> torch.nn.Module:
    import transformers

    config_cls, model_cls, norm = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC, "group"),
        "hubert": (transformers.HubertConfig, transformers.HubertForCTC, "layer"),
    }[kind]
    config = config_cls(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3),
        conv_stride=(5, 2, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    return model


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_import_matches_the_hugging_face_model(kind: str, tmp_path: Path) -> None:
    hf_model = _tiny_model(kind, tmp_path / "hf")
    report = import_hf_ctc(tmp_path / "hf", tmp_path / "art")
    assert report.parity_max_abs_diff < 1e-3

    wave = np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1
    with torch.no_grad():
        logits = hf_model(torch.from_numpy(wave)[None]).logits[0]
    expected = torch.log_softmax(logits[:, [*range(1, len(VOCAB)), 0]], dim=-1).numpy()
    got = run_onnx(tmp_path / "art/model.onnx", wave[None], np.array([12000], dtype=np.int64))[0]
    np.testing.assert_allclose(got, expected, atol=1e-3)

    tokens = read_tokens(tmp_path / "art/tokens.txt")
    assert tokens[-1] == "<blk>" and "▁" in tokens and "|" not in tokens and "<pad>" not in tokens
    manifest = ArtifactManifest.load(tmp_path / "art")
    assert manifest.frontend == WaveformFrontend(normalize=True)
    assert manifest.subsampling_factor == 20 and manifest.vocab_size == len(VOCAB) - 1


def test_imported_artifact_is_served_by_the_runtime(tmp_path: Path, tiny_testset: Path) -> None:
    _tiny_model("wav2vec2", tmp_path / "hf")
    import_hf_ctc(tmp_path / "hf", tmp_path / "art", int8=True)
    # No voice activity detection on the runtime side: the plain path has none, and the tiny
    # test set's tone clips are non-speech to Silero.
    runtime = evaluate_artifact(tmp_path / "art", tiny_testset, vad="off")
    plain = evaluate_artifact(tmp_path / "art", tiny_testset, use_runtime=False)
    assert runtime.pipeline == "kubescribe-runtime"
    assert runtime.hypotheses == plain.hypotheses
    assert (tmp_path / "art/model.int8.onnx").stat().st_size > 0


def test_blank_moves_last_keeping_the_rest_in_order() -> None:
    assert blank_last_order(5, 0) == [1, 2, 3, 4, 0]
    assert blank_last_order(3, 2) == [0, 1, 2]
    with pytest.raises(ModelingError):
        blank_last_order(3, 7)


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["WhisperForConditionalGeneration"]})
    )
    with pytest.raises(ModelingError, match="not supported"):
        import_hf_ctc(tmp_path, tmp_path / "out")
    with pytest.raises(ModelingError, match=r"no config\.json"):
        import_hf_ctc(tmp_path / "missing", tmp_path / "out")


def test_the_imported_models_language_picks_its_normaliser(tmp_path: Path) -> None:
    from kubescribe_modeling.evaluate import artifact_normalizer
    from kubescribe_modeling.text_lang import normalize_text_es

    _tiny_model("wav2vec2", tmp_path / "hf")
    import_hf_ctc(tmp_path / "hf", tmp_path / "art", language="es")
    assert ArtifactManifest.load(tmp_path / "art").languages == ["es"]
    assert artifact_normalizer(tmp_path / "art") is normalize_text_es
