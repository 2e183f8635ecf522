"""Reference clips (contract 2): a few short clips of the model's test set and their expected
transcripts, written into the artifact (``reference/`` and the manifest's ``reference`` section,
their digests in ``files``), with the WER the model scores on them here: the declared WER the
runtime's quality gate holds every pod of this version to before it takes traffic.

The WER is measured through the runtime's own pipeline and counted with the runtime's own
:func:`~kubescribe_runtime.quality_gate.reference_wer`, so the pod measures exactly what was
declared. Clips must come from a test set (never trained on): the gate is only worth something
on audio the model did not learn by heart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import soundfile
from kubescribe_runtime.manifest import (
    MANIFEST_NAME,
    ArtifactManifest,
    ReferenceClip,
    ReferenceSet,
    sha256_file,
)
from kubescribe_runtime.quality_gate import reference_wer

from kubescribe_modeling.dataset import Utterance, read_manifest
from kubescribe_modeling.errors import ModelingError

REFERENCE_DIR = "reference"
DEFAULT_COUNT = 4
MIN_SECONDS, MAX_SECONDS = 2.0, 4.0


def pick_clips(
    utterances: list[Utterance],
    count: int = DEFAULT_COUNT,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> list[Utterance]:
    """``count`` clips between ``min_seconds`` and ``max_seconds``, spread evenly over the test
    set (its sources and voices alternate), deterministic. A set with too few such clips (a
    quick, limited one) lends the ones nearest to the range, in the set's order."""
    if not utterances or count < 1:
        raise ModelingError("reference clips need a test set with clips, and a count of 1 or more")
    durations = [soundfile.info(str(u.audio)).duration for u in utterances]
    short = [
        u for u, d in zip(utterances, durations, strict=True) if min_seconds <= d <= max_seconds
    ]
    if len(short) < count:

        def distance(i: int) -> float:
            return max(min_seconds - durations[i], durations[i] - max_seconds, 0.0)

        nearest = sorted(range(len(utterances)), key=distance)[:count]
        return [utterances[i] for i in sorted(nearest)]
    step = len(short) / count
    return [short[int(i * step)] for i in range(count)]


def _transcripts(artifact: Path, model_file: str, clips: list[Path]) -> list[str]:
    from kubescribe_modeling.evaluate import runtime_transcriber

    transcribe = runtime_transcriber(artifact, model_file)
    if transcribe is None:
        raise ModelingError("reference clips need the runtime (pip install kubescribe[runtime])")
    return transcribe(clips)


def add_reference_clips(
    artifact: Path,
    testset: Path,
    count: int = DEFAULT_COUNT,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> ReferenceSet:
    """Copy ``count`` clips of ``testset`` into ``artifact/reference/``, measure the WER of every
    ONNX file of the artifact on them, and rewrite its manifest with the ``reference`` section
    (clips replaced if it had some)."""
    from kubescribe_modeling.evaluate import artifact_normalizer, describe_testset, manifest_path

    manifest = ArtifactManifest.load(artifact)
    chosen = pick_clips(read_manifest(manifest_path(testset)), count, min_seconds, max_seconds)
    normalize = artifact_normalizer(artifact)
    folder = artifact / REFERENCE_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    files = {n: d for n, d in manifest.files.items() if not n.startswith(f"{REFERENCE_DIR}/")}
    clips = []
    for number, utterance in enumerate(chosen, start=1):
        name = f"{REFERENCE_DIR}/{number:02d}{utterance.audio.suffix.lower()}"
        shutil.copyfile(utterance.audio, artifact / name)
        files[name] = sha256_file(artifact / name)
        clips.append(ReferenceClip(path=name, sha256=files[name], text=normalize(utterance.text)))
    # The clips are part of the artifact before they are measured through it (it is verified).
    bare = manifest.model_copy(update={"files": files, "reference": None})
    (artifact / MANIFEST_NAME).write_text(bare.to_yaml(), encoding="utf-8")
    paths = [artifact / clip.path for clip in clips]
    texts = [clip.text for clip in clips]
    wer = {
        model_file: round(reference_wer(texts, _transcripts(artifact, model_file, paths)), 4)
        for model_file in sorted(files, key=lambda n: (n != "model.onnx", n))
        if model_file.endswith(".onnx")
    }
    reference = ReferenceSet(
        test_set=str(describe_testset(testset).get("name", testset)), clips=clips, wer=wer
    )
    final = ArtifactManifest.model_validate(
        {**bare.model_dump(by_alias=True), "reference": reference.model_dump()}
    )
    (artifact / MANIFEST_NAME).write_text(final.to_yaml(), encoding="utf-8")
    return reference
