"""Write a model artifact (contract 2) from a trained checkpoint.

``model.onnx`` (+ ``model.int8.onnx``), ``tokens.txt``, ``vocab.txt`` and ``config.json`` for
onnx-asr, and ``kubescribe.yaml`` listing every file's sha256 and the released test WER.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from kubescribe_runtime.features import log_mel_batch
from kubescribe_runtime.manifest import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    ArtifactManifest,
    Evaluation,
    Frontend,
    NemoLogMelFrontend,
    sha256_file,
)

from kubescribe_modeling.checkpoint import Checkpoint
from kubescribe_modeling.dataset import read_audio, read_manifest
from kubescribe_modeling.evaluate import EvalReport
from kubescribe_modeling.model import SUBSAMPLING_FACTOR, subsampled_lengths
from kubescribe_modeling.onnx_export import export_onnx, parity, quantize_int8, set_metadata
from kubescribe_modeling.vocab import tokens_file_text

PARITY_THRESHOLD = 1e-3
ARTIFACT_FILES = ("model.onnx", "model.int8.onnx", "tokens.txt", "vocab.txt", "config.json")
#: onnx-asr's name for a NeMo Conformer CTC model (its loader's model_type key).
ONNX_ASR_MODEL_TYPE = "nemo-conformer-ctc"
#: NeMo's class name, which sherpa-onnx reads from the ONNX metadata.
NEMO_MODEL_TYPE = "EncDecCTCModelBPE"


@dataclass
class ExportReport:
    out_dir: Path
    parity_max_abs_diff: float
    files: dict[str, str]
    wer: dict[str, float] = field(default_factory=dict)


def nemo_metadata(vocab_size_with_blank: int, subsampling_factor: int) -> dict[str, object]:
    """ONNX metadata sherpa-onnx's NeMo CTC loader reads (it stops without the first two)."""
    return {
        "vocab_size": vocab_size_with_blank,
        "subsampling_factor": subsampling_factor,
        "normalize_type": "per_feature",
        "model_type": NEMO_MODEL_TYPE,
        "model_author": "kubescribe",
        "version": "1",
    }


def onnx_asr_config(subsampling_factor: int, features_size: int = 80) -> dict[str, object]:
    """``config.json``: without it onnx-asr assumes subsampling 8 and decodes half the audio."""
    return {
        "model_type": ONNX_ASR_MODEL_TYPE,
        "features_size": features_size,
        "subsampling_factor": subsampling_factor,
    }


def parity_inputs(
    testset: Path | None, frontend: NemoLogMelFrontend, count: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of real test features (or seeded random ones) of unequal lengths."""
    from kubescribe_modeling.evaluate import manifest_path

    if testset is not None and manifest_path(testset).is_file():
        utterances = read_manifest(manifest_path(testset))[:count]
        batch, valid = log_mel_batch([read_audio(u.audio) for u in utterances], frontend)
        return torch.from_numpy(batch), torch.from_numpy(valid)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([300, 217, 64, 129])[:count]
    feats = torch.randn(len(lengths), frontend.n_mels, int(lengths.max()) + 1, generator=gen)
    mask = torch.arange(feats.shape[2])[None, :] < lengths[:, None]
    return feats * mask[:, None, :], lengths


def write_manifest(
    out_dir: Path,
    *,
    name: str,
    version: str,
    vocab_size: int,
    subsampling_factor: int,
    frontend: Frontend,
    model_type: str,
    evaluation: list[Evaluation],
    description: str,
    languages: Sequence[str] = ("en",),
) -> ArtifactManifest:
    # Only the artifact's own files: a model card or notes next to them are not part of it.
    files = {
        name: sha256_file(out_dir / name) for name in ARTIFACT_FILES if (out_dir / name).is_file()
    }
    manifest = ArtifactManifest.model_validate(
        {
            "schema": MANIFEST_SCHEMA,
            "name": name,
            "version": version,
            "languages": list(languages),
            "vocab_size": vocab_size,
            "subsampling_factor": subsampling_factor,
            "frontend": frontend,
            "model_type": model_type,
            "files": files,
            "evaluation": evaluation,
            "description": description,
        }
    )
    (out_dir / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return manifest


def export_checkpoint(
    checkpoint: Checkpoint,
    out_dir: Path,
    *,
    name: str = "kubescribe-conformer-ctc",
    version: str = "0.1.0",
    int8: bool = False,
    testset: Path | Sequence[Path] | None = None,
    description: str = "",
    language: str = "en",
    reference_clips: int = 0,
) -> ExportReport:
    """Export, check parity, quantise, evaluate on ``testset`` (one or several; each result
    names its set, real or synthetic speech, channel and language) and write the manifest;
    with ``reference_clips``, that many clips of the first test set become the quality gate's
    reference clips (kubescribe_modeling.reference).

    ``wer`` of the report is the first test set's."""
    from kubescribe_modeling.evaluate import describe_testset, evaluate_artifact

    testsets = [testset] if isinstance(testset, Path) else list(testset or [])

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "model.int8.onnx", MANIFEST_NAME):
        (out_dir / stale).unlink(missing_ok=True)
    model = checkpoint.build_model()
    frontend = NemoLogMelFrontend()
    tokens = checkpoint.vocab.tokens
    inputs = parity_inputs(testsets[0] if testsets else None, frontend)
    onnx_path = out_dir / "model.onnx"
    export_onnx(model, onnx_path, inputs)
    set_metadata(onnx_path, nemo_metadata(len(tokens) + 1, SUBSAMPLING_FACTOR))
    diff = parity(model, onnx_path, inputs, subsampled_lengths(inputs[1]), PARITY_THRESHOLD)
    text = tokens_file_text(tokens)
    (out_dir / "tokens.txt").write_text(text, encoding="utf-8")
    (out_dir / "vocab.txt").write_text(text, encoding="utf-8")
    (out_dir / "config.json").write_text(
        json.dumps(onnx_asr_config(SUBSAMPLING_FACTOR, frontend.n_mels), indent=2) + "\n",
        encoding="utf-8",
    )
    model_files = ["model.onnx"]
    if int8:
        quantize_int8(onnx_path, out_dir / "model.int8.onnx")
        model_files.append("model.int8.onnx")
    evaluation: list[Evaluation] = []
    wer: dict[str, float] = {}
    write = functools.partial(
        write_manifest,
        out_dir,
        name=name,
        version=version,
        vocab_size=len(tokens),
        subsampling_factor=SUBSAMPLING_FACTOR,
        frontend=frontend,
        model_type=NEMO_MODEL_TYPE,
        description=description,
        languages=[language],
    )
    if testsets:
        # A provisional manifest lets the evaluator read the front end; rewritten below.
        write(evaluation=[])
    for n, path in enumerate(testsets):
        info = describe_testset(path)
        for model_file in model_files:
            report = evaluate_artifact(out_dir, path, model_file)
            if n == 0:
                wer[model_file] = report.wer
            evaluation.append(
                Evaluation(
                    test_set=str(info.get("name", path)),
                    wer=round(report.wer, 4),
                    utterances=report.utterances,
                    model_file=model_file,
                    speech=info.get("speech"),
                    channel=str(info.get("channel", "")),
                    language=str(info.get("language", language)),
                )
            )
    write(evaluation=evaluation)
    if reference_clips and testsets:
        from kubescribe_modeling.reference import add_reference_clips

        add_reference_clips(out_dir, testsets[0], reference_clips)
    files = {p.name: sha256_file(p) for p in sorted(out_dir.iterdir()) if p.is_file()}
    return ExportReport(out_dir=out_dir, parity_max_abs_diff=diff, files=files, wer=wer)


def declare_evaluation(
    artifact: Path, testset: Path, model_file: str = "model.onnx", report: EvalReport | None = None
) -> Evaluation:
    """Record ``model_file``'s WER on ``testset`` (measured here unless ``report`` is given) in
    the artifact's manifest; a result on the same set and file is replaced, real-speech results
    are listed first."""
    from kubescribe_modeling.evaluate import describe_testset, evaluate_artifact

    manifest = ArtifactManifest.load(artifact)
    info = describe_testset(testset)
    report = report or evaluate_artifact(artifact, testset, model_file)
    result = Evaluation(
        test_set=str(info.get("name", testset)),
        wer=round(report.wer, 4),
        utterances=report.utterances,
        model_file=model_file,
        speech=info.get("speech"),
        channel=str(info.get("channel", "")),
        language=str(info.get("language", manifest.languages[0])),
    )
    kept = [
        e
        for e in manifest.evaluation
        if (e.test_set, e.model_file) != (result.test_set, result.model_file)
    ]
    ordered = sorted([*kept, result], key=lambda e: e.speech != "real")
    updated = manifest.model_copy(update={"evaluation": ordered})
    (artifact / MANIFEST_NAME).write_text(updated.to_yaml(), encoding="utf-8")
    return result
