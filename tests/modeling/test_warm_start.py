"""Warm starts: the torch checkpoint recovered from an exported artifact reproduces it, and
``kubescribe train --init ARTIFACT`` starts from those weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from kubescribe_modeling.artifact import ExportReport
from kubescribe_modeling.checkpoint import Checkpoint, load_checkpoint
from kubescribe_modeling.cli import train_main
from kubescribe_modeling.errors import CheckpointError
from kubescribe_modeling.model import count_parameters
from kubescribe_modeling.onnx_export import run_onnx
from kubescribe_modeling.warm_start import checkpoint_from_artifact, load_init

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "models" / "demo"


def test_the_tiny_artifact_gives_back_its_checkpoint(
    tiny_artifact: ExportReport, tiny_checkpoint: Checkpoint
) -> None:
    recovered = checkpoint_from_artifact(tiny_artifact.out_dir)
    sizes = recovered.model_config.model_dump(exclude={"dropout"})
    assert sizes == tiny_checkpoint.model_config.model_dump(exclude={"dropout"})
    assert recovered.model_config.n_heads == 2  # not the first head count tried
    assert recovered.vocab.tokens == list(tiny_checkpoint.vocab.tokens)
    assert recovered.state_dict.keys() == tiny_checkpoint.state_dict.keys()
    for name, value in tiny_checkpoint.state_dict.items():
        torch.testing.assert_close(recovered.state_dict[name], value, msg=name)


def test_the_demo_models_weights_come_back_from_its_onnx() -> None:
    recovered = checkpoint_from_artifact(DEMO)
    model = recovered.build_model()
    assert 4.7e6 < count_parameters(model) < 4.8e6
    feats = torch.randn(1, 80, 400, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([400])
    with torch.no_grad():
        expected, _ = model(feats, lengths)
    got = run_onnx(DEMO / "model.onnx", feats.numpy(), lengths.numpy())
    assert np.abs(got - expected.numpy()).max() < 1e-3


def test_an_artifact_without_a_character_vocabulary_is_refused(
    tiny_artifact: ExportReport, tmp_path: Path
) -> None:
    bpe = tmp_path / "bpe"
    shutil.copytree(tiny_artifact.out_dir, bpe)
    tokens = (bpe / "tokens.txt").read_text(encoding="utf-8").splitlines()
    (bpe / "tokens.txt").write_text("\n".join(["▁he 0", *tokens[1:]]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="character vocabularies"):
        checkpoint_from_artifact(bpe)
    with pytest.raises(CheckpointError, match=r"no model\.onnx"):
        load_init(tmp_path)


def test_train_init_from_an_artifact_fine_tunes_its_weights(
    tiny_artifact: ExportReport,
    tiny_corpus: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "config.yaml"
    # the configuration's model section is the default size: --init's sizes win
    config.write_text(
        f"corpus: {tiny_corpus}\nepochs: 1\nbatch_frames: 2400\nwarmup_steps: 1\nthreads: 1\n",
        encoding="utf-8",
    )
    out = tmp_path / "run"
    code = train_main(["--config", str(config), "--out-dir", str(out), "--no-progress",
                       "--init", str(tiny_artifact.out_dir)])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["steps"] > 0
    tuned = load_checkpoint(out / "last.pt")
    start = checkpoint_from_artifact(tiny_artifact.out_dir)
    assert tuned.model_config == start.model_config
    assert count_parameters(tuned.build_model()) == count_parameters(start.build_model())
    moved = [k for k, v in start.state_dict.items() if not torch.equal(tuned.state_dict[k], v)]
    assert moved, "training did not change the recovered weights"
