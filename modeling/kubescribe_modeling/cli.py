"""``kubescribe data|train|prune|export|import|evaluate``: argument parsing only."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from kubescribe_modeling.errors import ModelingError

__all__ = [
    "data_main",
    "evaluate_main",
    "export_main",
    "import_main",
    "prune_main",
    "train_main",
]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _add_set_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable), read by ``load_config`` as ``args.settings``."""
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override {what}; repeatable",
    )


def data_main(argv: Sequence[str]) -> int:
    """Synthesise the corpus (the data package's command, re-exported for the dispatcher)."""
    from kubescribe_modeling.data.cli import data_main as run

    code: int = run(argv)
    return code


def train_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="kubescribe train", description="Train a Conformer-CTC.")
    parser.add_argument("--config", type=Path, required=True, help="training configuration YAML")
    parser.add_argument("--out-dir", type=Path, help="override out_dir of the configuration")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument("--max-minutes", type=_positive_float, help="time budget")
    parser.add_argument("--epochs", type=int, help="override epochs")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override device")
    parser.add_argument("--threads", type=int, help="override torch CPU threads")
    parser.add_argument("--teacher", type=Path, help="distil from this teacher checkpoint")
    parser.add_argument(
        "--init",
        type=Path,
        help="start from this checkpoint (e.g. pruned) or exported artifact (a warm start)",
    )
    _add_set_option(parser, "any configuration key (dotted, e.g. model.d_model=176)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--prepare", action="store_true", help="only compute the feature cache, then exit"
    )
    args = parser.parse_args(argv)

    from kubescribe_modeling.config import load_config
    from kubescribe_modeling.train import train
    from kubescribe_modeling.warm_start import load_init

    overrides: dict[str, object] = {}
    if args.out_dir:
        overrides["out_dir"] = str(args.out_dir)
    if args.max_minutes:
        overrides["max_minutes"] = args.max_minutes
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.device:
        overrides["device"] = args.device
    if args.threads:
        overrides["threads"] = args.threads
    cfg = load_config(args.config, overrides, args.settings)
    if args.teacher:
        cfg = cfg.model_copy(
            update={"distill": cfg.distill.model_copy(update={"teacher": args.teacher})}
        )
    if args.prepare:
        from kubescribe_modeling.train import prepare_features

        counts = prepare_features(cfg, progress=not args.no_progress)
        print(json.dumps(counts))
        return 0
    init = load_init(args.init) if args.init else None
    result = train(cfg, resume=args.resume, init=init, progress=not args.no_progress)
    print(
        json.dumps(
            {
                "best": str(result.best),
                "last": str(result.last),
                "best_dev_wer": result.best_dev_wer,
                "epochs": result.epochs,
                "steps": result.steps,
                "minutes": round(result.minutes, 2),
                "parameters": result.parameters,
            }
        )
    )
    return 0


def prune_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe prune",
        description="Structured pruning of feed-forward units, then an optional fine-tune.",
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("output", type=Path, help="pruned checkpoint (.pt)")
    parser.add_argument("--amount", type=float, default=0.5, help="fraction of units removed")
    parser.add_argument("--config", type=Path, help="training configuration for the fine-tune")
    parser.add_argument("--finetune-minutes", type=_positive_float, help="fine-tune budget")
    parser.add_argument("--threads", type=int, help="override torch CPU threads of the fine-tune")
    _add_set_option(parser, "a key of the fine-tune configuration")
    args = parser.parse_args(argv)

    from kubescribe_modeling.checkpoint import load_checkpoint, save_checkpoint
    from kubescribe_modeling.model import count_parameters
    from kubescribe_modeling.prune import prune_checkpoint

    source = load_checkpoint(args.checkpoint)
    pruned = prune_checkpoint(source, args.amount)
    save_checkpoint(args.output, pruned)
    before = count_parameters(source.build_model())
    after = count_parameters(pruned.build_model())
    print(json.dumps({"parameters_before": before, "parameters_after": after}))
    if args.finetune_minutes:
        if args.config is None:
            raise ModelingError("--finetune-minutes needs --config")
        from kubescribe_modeling.config import load_config
        from kubescribe_modeling.train import train

        cfg = load_config(
            args.config,
            {
                "out_dir": str(args.output.with_suffix("")) + "-finetune",
                "max_minutes": args.finetune_minutes,
                "warmup_steps": 0,
                **({"threads": args.threads} if args.threads else {}),
            },
            args.settings,
        )
        result = train(cfg, init=pruned)
        save_checkpoint(args.output, load_checkpoint(result.best))
        print(json.dumps({"finetuned": str(args.output), "best_dev_wer": result.best_dev_wer}))
    return 0


def export_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe export", description="Export a checkpoint to a model artifact."
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx")
    parser.add_argument(
        "--testset",
        type=Path,
        action="append",
        default=[],
        help="measure WER on this test set (repeatable; the first is the report's wer)",
    )
    parser.add_argument("--language", default="en", help="the model's language (en, es)")
    parser.add_argument(
        "--reference-clips",
        type=int,
        default=4,
        help="reference clips for the quality gate, from the first --testset (0: none)",
    )
    parser.add_argument("--name", default="kubescribe-conformer-ctc")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)

    from kubescribe_modeling.artifact import export_checkpoint
    from kubescribe_modeling.checkpoint import load_checkpoint

    report = export_checkpoint(
        load_checkpoint(args.checkpoint),
        args.out_dir,
        name=args.name,
        version=args.version,
        int8=args.int8,
        testset=args.testset,
        description=args.description,
        language=args.language,
        reference_clips=args.reference_clips,
    )
    result: dict[str, object] = {
        "out_dir": str(report.out_dir),
        "parity_max_abs_diff": report.parity_max_abs_diff,
        "wer": report.wer,
    }
    if "model.int8.onnx" in report.wer:
        result["int8_wer_change"] = report.wer["model.int8.onnx"] - report.wer["model.onnx"]
    print(json.dumps(result))
    return 0


def import_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe import",
        description="Convert a Hugging Face Wav2Vec2ForCTC/HubertForCTC directory to an artifact.",
    )
    parser.add_argument("hf_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--name", help="artifact name (default: the folder's name)")
    parser.add_argument("--version", default="0.1.0")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx")
    parser.add_argument("--language", default="en", help="the model's language (en, es)")
    args = parser.parse_args(argv)

    from kubescribe_modeling.hf_import import import_hf_ctc

    report = import_hf_ctc(
        args.hf_dir,
        args.out_dir,
        name=args.name,
        version=args.version,
        int8=args.int8,
        language=args.language,
    )
    print(
        json.dumps(
            {"out_dir": str(report.out_dir), "parity_max_abs_diff": report.parity_max_abs_diff}
        )
    )
    return 0


def evaluate_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe evaluate", description="Word error rate of an artifact on a test set."
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument(
        "--testset",
        type=Path,
        action="append",
        help="test set folder or manifest (repeatable; default examples/testset); a real-speech "
        "set comes from `kubescribe data asterisk`",
    )
    parser.add_argument("--model-file", default="model.onnx")
    parser.add_argument(
        "--declare",
        action="store_true",
        help="also record each result in the artifact's kubescribe.yaml (same set and file "
        "replaced; real speech listed first)",
    )
    args = parser.parse_args(argv)

    from kubescribe_modeling.artifact import declare_evaluation
    from kubescribe_modeling.evaluate import describe_testset, evaluate_artifact

    for testset in args.testset or [Path("examples/testset")]:
        info = describe_testset(testset)
        report = evaluate_artifact(args.artifact, testset, args.model_file)
        if args.declare:
            declare_evaluation(args.artifact, testset, args.model_file, report)
        print(
            json.dumps(
                {
                    "test_set": info.get("name", str(testset)),
                    "speech": info.get("speech"),
                    "channel": info.get("channel", ""),
                    "wer": round(report.wer, 4),
                    "by_source": {k: round(v, 4) for k, v in report.by_source.items()},
                    "utterances": report.utterances,
                    "rtf": round(report.rtf, 4),
                    "pipeline": report.pipeline,
                },
                ensure_ascii=False,
            )
        )
    return 0


def reference_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe reference",
        description="Write the quality gate's reference clips (a few short clips of a test set "
        "the model was not trained on, their transcripts, and the WER the model scores on them) "
        "into an artifact's reference/ and kubescribe.yaml.",
    )
    parser.add_argument("artifact", type=Path)
    parser.add_argument(
        "--testset", type=Path, default=Path("examples/testset"), help="the model's test set"
    )
    parser.add_argument("--count", type=int, default=4, help="how many clips (default 4)")
    parser.add_argument("--min-seconds", type=_positive_float, default=2.0)
    parser.add_argument("--max-seconds", type=_positive_float, default=4.0)
    args = parser.parse_args(argv)

    from kubescribe_modeling.reference import add_reference_clips

    reference = add_reference_clips(
        args.artifact, args.testset, args.count, args.min_seconds, args.max_seconds
    )
    print(
        json.dumps(
            {
                "test_set": reference.test_set,
                "clips": [clip.path for clip in reference.clips],
                "wer": reference.wer,
            },
            ensure_ascii=False,
        )
    )
    return 0
