"""Measure artifacts for the model card: parameters, ONNX size, CPU real-time factor, test WER,
and the same artifact's WER in kubescribe's runtime, onnx-asr and sherpa-onnx.

    python -m kubescribe_modeling.report --testset examples/testset \\
        --row "teacher=runs/art/teacher@runs/demo" --row "int8=runs/art/teacher:model.int8.onnx" \\
        --interop examples/models/demo --out examples/models/demo/results.json

Every number in ``results.json`` is measured here; ``kubescribe_modeling.card`` renders it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.evaluate import (
    EvalReport,
    artifact_normalizer,
    evaluate,
    evaluate_artifact,
    onnx_transcriber,
)


@dataclass(frozen=True)
class RowSpec:
    label: str
    artifact: Path
    model_file: str = "model.onnx"
    run_dir: Path | None = None

    @classmethod
    def parse(cls, text: str) -> RowSpec:
        """``LABEL=ARTIFACT_DIR[:MODEL_FILE][@RUN_DIR]``."""
        label, sep, rest = text.partition("=")
        if not sep or not label or not rest:
            raise ModelingError(f"bad row {text!r}: expected LABEL=ARTIFACT[:MODEL_FILE][@RUN_DIR]")
        rest, _, run_dir = rest.partition("@")
        artifact, _, model_file = rest.partition(":")
        return cls(
            label, Path(artifact), model_file or "model.onnx", Path(run_dir) if run_dir else None
        )


def onnx_parameters(path: Path) -> int:
    """Number of floating-point weights in an fp32 ONNX graph's initializers."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return sum(
        int(numpy_helper.to_array(t).size)
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
    )


def training_summary(run_dir: Path) -> dict[str, Any]:
    """From ``history.jsonl``: minutes, steps, epochs and the best dev WER of the run."""
    path = run_dir / "history.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        return {}
    return {
        "train_minutes": round(records[-1]["minutes"], 1),
        "steps": records[-1]["step"],
        "epochs_completed": sum(1 for r in records if r["complete"]),
        "best_dev_wer": round(min(r["dev_wer"] for r in records), 4),
    }


def _wer_fields(report: EvalReport) -> dict[str, float]:
    fields = {"wer": round(report.wer, 4)}
    fields.update({f"wer_{k}": round(v, 4) for k, v in report.by_source.items()})
    return fields


def measure_row(spec: RowSpec, testset: Path) -> dict[str, Any]:
    report = evaluate(
        onnx_transcriber(spec.artifact, spec.model_file, threads=1),
        testset,
        normalize=artifact_normalizer(spec.artifact),
    )
    row: dict[str, Any] = {
        "label": spec.label,
        "artifact": str(spec.artifact),
        "model_file": spec.model_file,
        "parameters": onnx_parameters(spec.artifact / "model.onnx"),
        "onnx_mb": round((spec.artifact / spec.model_file).stat().st_size / 2**20, 2),
        "rtf": round(report.rtf, 4),
        **_wer_fields(report),
    }
    if spec.run_dir is not None:
        row.update(training_summary(spec.run_dir))
    return row


def measure_interop(artifact: Path, testset: Path) -> list[dict[str, Any]]:
    from kubescribe_modeling.interop import onnx_asr_transcriber, sherpa_onnx_transcriber

    rows = []
    norm = artifact_normalizer(artifact)
    for model_file in ("model.onnx", "model.int8.onnx"):
        if not (artifact / model_file).exists():
            continue
        reports = {
            "kubescribe": evaluate_artifact(artifact, testset, model_file),
            "onnx-asr": evaluate(
                onnx_asr_transcriber(artifact, model_file), testset, normalize=norm
            ),
            "sherpa-onnx": evaluate(
                sherpa_onnx_transcriber(artifact, model_file), testset, normalize=norm
            ),
        }
        for engine, report in reports.items():
            rows.append({"engine": engine, "model_file": model_file, **_wer_fields(report)})
    return rows


def measure_real_speech(
    artifact: Path,
    testsets: Sequence[Path],
    model_file: str = "model.onnx",
    examples: int = 3,
    twin_voice: str | None = None,
) -> dict[str, Any]:
    """The artifact on recorded human speech (``kubescribe data --asterisk``), through the
    runtime's pipeline: WER per test set, with a few transcripts to show what it means; with
    ``twin_voice``, also on the same sentences spoken by that espeak-ng voice over the phone."""
    import soundfile as sf

    from kubescribe_modeling.dataset import read_manifest
    from kubescribe_modeling.evaluate import describe_testset, manifest_path

    results = []
    for testset in testsets:
        info = describe_testset(testset)
        report = evaluate_artifact(artifact, testset, model_file)
        utterances = read_manifest(manifest_path(testset))
        minutes = sum(sf.info(str(u.audio)).duration for u in utterances) / 60
        results.append(
            {
                "test_set": info.get("name", str(testset)),
                **{k: info.get(k) for k in ("language", "speech", "channel", "voice", "license")},
                "packages": info.get("packages", {}),
                "model_file": model_file,
                "utterances": report.utterances,
                "minutes": round(minutes, 1),
                "wer": round(report.wer, 4),
                "pipeline": report.pipeline,
                "examples": [
                    {"reference": r, "hypothesis": h}
                    for r, h in list(zip(report.references, report.hypotheses, strict=True))[
                        :examples
                    ]
                ],
            }
        )
        if twin_voice:
            results[-1]["synthetic_twin"] = _synthetic_twin(
                artifact, testset, model_file, twin_voice
            )
    return {"artifact": str(artifact), "results": results}


def _synthetic_twin(artifact: Path, testset: Path, model_file: str, voice: str) -> dict[str, Any]:
    import tempfile

    from kubescribe_modeling.data.asterisk import build_synthetic_twin

    with tempfile.TemporaryDirectory() as tmp:
        info = build_synthetic_twin(testset, Path(tmp), voice)
        report = evaluate_artifact(artifact, Path(tmp), model_file)
    return {"voice": voice, "channel": info["channel"], "wer": round(report.wer, 4)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubescribe_modeling.report")
    parser.add_argument("--testset", type=Path, default=Path("examples/testset"))
    parser.add_argument("--row", action="append", default=[], help="LABEL=ARTIFACT[:FILE][@RUN]")
    parser.add_argument("--interop", type=Path, help="artifact to run in all three engines")
    parser.add_argument("--demo-run", type=Path, help="training run of the demo model")
    parser.add_argument("--full-testset", type=Path, help="larger test manifest for --interop")
    parser.add_argument("--corpus-info", type=Path, help="the corpus's corpus.json")
    parser.add_argument("--note", action="append", default=[], help="a line for the card's notes")
    parser.add_argument("--train-machine", help="where the models were trained, for the card")
    parser.add_argument(
        "--real-testset",
        type=Path,
        action="append",
        default=[],
        help="recorded-speech test set (kubescribe data --asterisk) for --real-speech; repeatable",
    )
    parser.add_argument(
        "--real-speech", type=Path, help="artifact measured on --real-testset (the card leads)"
    )
    parser.add_argument(
        "--twin-voice", help="also the real sets' sentences in this espeak-ng voice, as a call"
    )
    parser.add_argument("--commands", type=Path, help="shell file: the card's training commands")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="update the sections measured here in an existing --out, keep the others",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.merge:
        merged = _merge_sections(args)
        args.out.write_text(json.dumps(merged, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps(merged, indent=2, ensure_ascii=False))
        return 0

    from kubescribe_modeling.dataset import read_manifest
    from kubescribe_modeling.evaluate import manifest_path

    utterances = read_manifest(manifest_path(args.testset))
    results: dict[str, Any] = {
        "testset": str(args.testset),
        "utterances": len(utterances),
        "sources": {
            s: sum(u.source == s for u in utterances)
            for s in sorted({u.source for u in utterances})
        },
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores; onnxruntime 1 thread",
        "rows": [measure_row(RowSpec.parse(r), args.testset) for r in args.row],
    }
    if args.interop is not None:
        results["interop"] = measure_interop(args.interop, args.testset)
    if args.interop is not None and args.full_testset is not None:
        results["full_test"] = {
            "testset": str(args.full_testset),
            "utterances": len(read_manifest(manifest_path(args.full_testset))),
            "results": [
                {
                    "model_file": f,
                    **_wer_fields(evaluate_artifact(args.interop, args.full_testset, f)),
                }
                for f in ("model.onnx", "model.int8.onnx")
                if (args.interop / f).exists()
            ],
        }
    if args.corpus_info is not None:
        info = json.loads(args.corpus_info.read_text(encoding="utf-8"))
        results["corpus"] = {k: info.get(k) for k in ("held_out_voices", "splits", "espeak_ng")}
    if args.note:
        results["notes"] = list(args.note)
    if args.train_machine:
        results["train_machine"] = args.train_machine
    if args.demo_run is not None:
        results["demo_training"] = training_summary(args.demo_run)
    if args.real_speech is not None:
        results["real_speech"] = measure_real_speech(
            args.real_speech, args.real_testset, twin_voice=args.twin_voice
        )
    if args.commands is not None:
        results["commands"] = args.commands.read_text(encoding="utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def _merge_sections(args: argparse.Namespace) -> dict[str, Any]:
    """``--merge``: the existing results with only the sections asked for re-measured."""
    results: dict[str, Any] = json.loads(args.out.read_text(encoding="utf-8"))
    if args.real_speech is not None:
        results["real_speech"] = measure_real_speech(
            args.real_speech, args.real_testset, twin_voice=args.twin_voice
        )
    if args.demo_run is not None:
        results["demo_training"] = training_summary(args.demo_run)
    if args.note:
        results["notes"] = list(args.note)
    if args.train_machine:
        results["train_machine"] = args.train_machine
    if args.commands is not None:
        results["commands"] = args.commands.read_text(encoding="utf-8")
    if args.row:
        results["rows"] = [measure_row(RowSpec.parse(r), args.testset) for r in args.row]
    return results


if __name__ == "__main__":
    raise SystemExit(main())
