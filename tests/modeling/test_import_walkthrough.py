"""docs/artifacts.md's import walk-through, step by step, on a checkpoint with a real model's
configuration (facebook/wav2vec2-base-960h: 94 M parameters, its config, vocabulary and feature
extractor; random weights, since no weights can be downloaded here). The mechanics are checked —
import, parity, digests, the runtime serving it, the real-speech WER recorded in the manifest —
not the accuracy, which random weights do not have."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from kubescribe_modeling.evaluate import read_tokens
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.manifest import ArtifactManifest, WaveformFrontend

from kubescribe.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).parent / "data" / "wav2vec2-base-960h"
DOC = ROOT / "docs" / "artifacts.md"

pytestmark = pytest.mark.xdist_group("import-walkthrough")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Step 1 of the walk-through: the real configuration, random weights, saved as HF does."""
    import transformers

    folder = tmp_path_factory.mktemp("hf") / "random-base-960h"
    config = transformers.Wav2Vec2Config.from_json_file(str(CONFIG / "config.json"))
    torch.manual_seed(0)
    transformers.Wav2Vec2ForCTC(config).save_pretrained(folder)
    for name in ("vocab.json", "preprocessor_config.json"):
        shutil.copy(CONFIG / name, folder / name)
    return folder


def test_the_walkthrough_in_the_docs_is_this_test() -> None:
    text = DOC.read_text(encoding="utf-8")
    for step in (
        "tests/modeling/data/wav2vec2-base-960h",
        "kubescribe import checkpoints/random-base-960h artifacts/random-base-960h",
        "kubescribe data --asterisk en --split test",
        "kubescribe evaluate artifacts/random-base-960h --testset data/asterisk/en-test --declare",
        "accuracy cannot be checked here",
    ):
        assert step in text, step


def test_import_of_a_real_configuration_is_served_and_measured_on_real_speech(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    art = tmp_path / "random-base-960h"
    # Step 2: import (ONNX with parity against PyTorch, tokens with the blank last, manifest).
    assert main(["import", str(checkpoint), str(art), "--version", "0.0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["parity_max_abs_diff"] < 1e-3
    manifest = ArtifactManifest.load(art)
    assert manifest.frontend == WaveformFrontend(normalize=True)
    assert (manifest.subsampling_factor, manifest.vocab_size) == (320, 31)
    tokens = read_tokens(art / "tokens.txt")
    assert tokens[-1] == "<blk>" and tokens[0] == "<s>" and "▁" in tokens
    load_artifact(art)  # every digest verified, as `kubescribe fetch` does
    # Step 3: the real-speech test set, a slice of it; step 4: WER recorded in the manifest.
    testset = tmp_path / "en-test"
    assert main(["data", "--asterisk", "en", "--split", "test", "--limit", "3",
                 "--out", str(testset)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(art), "--testset", str(testset), "--declare"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pipeline"] == "kubescribe-runtime" and printed["utterances"] == 3
    (declared,) = ArtifactManifest.load(art).evaluation
    assert (declared.speech, declared.channel) == ("real", "telephone 8 kHz")
    assert declared.wer == printed["wer"] and declared.wer > 0.5  # random weights: no accuracy
    load_artifact(art)  # the manifest changed, the files did not: still verified
