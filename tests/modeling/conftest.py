"""Session fixtures: a tiny corpus, a tiny trained checkpoint and its exported artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_modeling.artifact import ExportReport, export_checkpoint
from kubescribe_modeling.checkpoint import Checkpoint, load_checkpoint
from kubescribe_modeling.train import train
from modeling_support import tiny_config, write_corpus


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), {"train": 24, "dev": 6})


@pytest.fixture(scope="session")
def tiny_testset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_corpus(tmp_path_factory.mktemp("testset"), {"manifest": 4}, seed=1)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    out = tmp_path_factory.mktemp("run")
    result = train(tiny_config(tiny_corpus, out), progress=False)
    return load_checkpoint(result.best)


@pytest.fixture(scope="session")
def tiny_artifact(
    tiny_checkpoint: Checkpoint, tiny_testset: Path, tmp_path_factory: pytest.TempPathFactory
) -> ExportReport:
    out = tmp_path_factory.mktemp("artifact")
    return export_checkpoint(tiny_checkpoint, out, int8=True, testset=tiny_testset)
