"""`kubescribe reference` (kubescribe_modeling.reference): the quality gate's clips written into
an artifact by the toolkit, and the runtime's gate measuring on them exactly the WER the toolkit
declared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
from bad_artifacts import DEMO_ARTIFACT, copy_artifact
from kubescribe_modeling.cli import reference_main
from kubescribe_modeling.dataset import Utterance
from kubescribe_modeling.reference import pick_clips
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.manifest import ArtifactManifest, sha256_file
from kubescribe_runtime.service import Service

TESTSET = DEMO_ARTIFACT.parents[1] / "testset"


def test_the_toolkit_writes_clips_that_the_runtime_gate_measures_as_declared(
    tmp_path: Path,
) -> None:
    artifact = tmp_path / "demo"
    copy_artifact(DEMO_ARTIFACT, artifact)
    assert reference_main([str(artifact), "--testset", str(TESTSET), "--count", "3"]) == 0
    manifest = ArtifactManifest.load(artifact)
    reference = manifest.reference
    assert reference is not None and reference.test_set == "examples/testset"
    assert [c.path for c in reference.clips] == [f"reference/0{i}.flac" for i in (1, 2, 3)]
    testset_texts = (TESTSET / "manifest.jsonl").read_text(encoding="utf-8")
    for clip in reference.clips:
        assert manifest.files[clip.path] == clip.sha256 == sha256_file(artifact / clip.path)
        assert 2 <= soundfile.info(str(artifact / clip.path)).duration <= 4
        assert f'"text": "{clip.text}"' in testset_texts  # from the test set, never trained on
    assert set(reference.wer) == {"model.onnx", "model.int8.onnx"}
    load_artifact(artifact)  # every digest verified, the clips' included
    service = Service(ServeConfig(model_dir=artifact, threads=1))
    service.load()
    try:
        gate = service.gate
        assert gate is not None and gate.passed and gate.clips == 3
        assert round(gate.measured or 0, 4) == reference.wer["model.onnx"]
    finally:
        service.close()


def test_clips_in_range_first_else_the_nearest(tmp_path: Path) -> None:
    utterances = []
    for seconds in (1.0, 5.0, 3.0, 6.0):
        path = tmp_path / f"{seconds:g}.wav"
        soundfile.write(str(path), np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
        utterances.append(Utterance(audio=path, text="a"))
    assert pick_clips(utterances, 1) == [utterances[2]]  # the one of 2-4 s
    # a quick test set with too few: the nearest lent, in the set's order (never a failure)
    assert pick_clips(utterances, 3) == utterances[:3]
