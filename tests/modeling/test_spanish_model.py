"""The Spanish example model (examples/models/demo-es): the runtime loads it (every digest
verified), transcribes recorded Spanish through its own pipeline, and on a slice of the
real-speech test split scores about what its manifest declares for the whole split."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_modeling.data.asterisk import build_testset
from kubescribe_modeling.dataset import read_manifest
from kubescribe_modeling.evaluate import evaluate_artifact
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.manifest import ArtifactManifest
from kubescribe_runtime.service import build_transcriber

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "models" / "demo-es"
#: A slice of 40 prompts scatters around the whole split's figure; a broken artifact (wrong
#: language normaliser, vocabulary or front end) lands far outside it.
SLICE, SLACK = 40, 0.15

pytestmark = pytest.mark.xdist_group("demo-model")


@pytest.fixture(scope="module")
def declared() -> float:
    manifest = ArtifactManifest.load(MODEL)
    assert manifest.languages == ["es"]
    real = [e for e in manifest.evaluation if e.speech == "real" and e.model_file == "model.onnx"]
    assert len(real) == 1 and real[0].language == "es" and real[0].channel == "telephone 8 kHz"
    return real[0].wer


def test_the_artifact_is_small_and_verified() -> None:
    artifact = load_artifact(MODEL)
    assert artifact.manifest.name == "kubescribe-demo-es"
    size = sum((MODEL / f).stat().st_size for f in artifact.manifest.files)
    assert size < 8 * 2**20, size


def test_the_runtime_transcribes_recorded_spanish(tmp_path: Path, declared: float) -> None:
    build_testset("es", tmp_path, "test", SLICE)
    clips = read_manifest(tmp_path / "manifest.jsonl")
    transcriber = build_transcriber(ServeConfig(model_dir=MODEL, max_batch_size=1))
    try:
        texts = [transcriber.transcribe(c.audio.read_bytes()).text for c in clips[:3]]
    finally:
        transcriber.batcher.close()
    assert all(set(t) <= set("abcdefghijklmnopqrstuvwxyz' ") for t in texts), texts
    report = evaluate_artifact(MODEL, tmp_path)
    assert report.utterances == SLICE
    assert abs(report.wer - declared) <= SLACK, (report.wer, declared)
