"""The Spanish example model (examples/models/demo-es): the runtime loads it (every digest
verified), transcribes synthetic Spanish in voices and sentences it never trained on, runs
recorded Spanish through its own pipeline, and on a slice of the real-speech test split scores
about what its manifest declares for the whole split."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_modeling.data.asterisk import build_testset, load_prompts
from kubescribe_modeling.data.realvoices import plan_jobs
from kubescribe_modeling.data.voice_testset import plan_voice_testset, write_voice_testset
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
#: The shipped model's training corpus: modeling/recipes/real-voices.sh es with 4000 clips
#: (training/corpus.json), whose sentences plan_jobs gives back from its seed.
TRAINING_CLIPS, TRAINING_SEED = 4000, 0
#: Held-out-voice clips the test renders, and the WER it must stay under on them.
CLIPS, MAX_WER = 8, 0.5

pytestmark = pytest.mark.xdist_group("demo-model")


@pytest.fixture(scope="module")
def declared() -> float:
    manifest = ArtifactManifest.load(MODEL)
    assert manifest.languages == ["es"]
    real = [e for e in manifest.evaluation if e.speech == "real" and e.model_file == "model.onnx"]
    assert len(real) == 1 and real[0].language == "es" and real[0].channel == "telephone 8 kHz"
    return real[0].wer


def test_the_artifact_is_verified_and_no_larger_than_the_english_demo() -> None:
    artifact = load_artifact(MODEL)
    assert artifact.manifest.name == "kubescribe-demo-es"
    size = sum((MODEL / f).stat().st_size for f in artifact.manifest.files)
    english = load_artifact(MODEL.parent / "demo").manifest.files
    assert size <= 1.01 * sum((MODEL.parent / "demo" / f).stat().st_size for f in english)


def test_it_transcribes_spanish_in_voices_and_sentences_it_never_trained_on(
    tmp_path: Path,
) -> None:
    prompts = [p.text for p in load_prompts("es")[0]]
    training = [j.text for j in plan_jobs("es", TRAINING_CLIPS, prompts, seed=TRAINING_SEED)]
    jobs = plan_voice_testset("es", ["es+f4", "es-419+m5"], CLIPS, training + prompts, seed=7)
    write_voice_testset("es", jobs, tmp_path)
    report = evaluate_artifact(MODEL, tmp_path)
    assert report.utterances == CLIPS
    assert report.wer < MAX_WER, list(zip(report.references, report.hypotheses, strict=True))


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
