"""``kubescribe data``: generate the synthetic speech corpus or the committed test set."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from kubescribe.errors import KubescribeError
from kubescribe_modeling.data.build import build_corpus, read_plan, write_plan
from kubescribe_modeling.data.plan import CorpusConfig, Utterance, plan_corpus
from kubescribe_modeling.data.testset import build_testset, write_sample

__all__ = ["data_main"]


class DataConfigError(KubescribeError):
    exit_code = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubescribe data",
        description="Synthesise a speech corpus with espeak-ng: OUT/{train,dev,test}.jsonl + wavs.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--hours", type=float, help="hours of train audio (default 18)")
    size.add_argument("--utterances", type=int, help="number of train utterances instead of hours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--template-fraction",
        type=float,
        default=0.4,
        help="share of train text from customer-service templates (rest: open vocabulary)",
    )
    p.add_argument(
        "--open-mix",
        type=float,
        nargs=3,
        default=(0.65, 0.1, 0.25),
        metavar=("WORDS", "GRAMMAR", "WRITTEN"),
        help="weights of open-vocabulary text kinds: random words, grammar, hand-written",
    )
    p.add_argument("--dev-fraction", type=float, default=0.02)
    p.add_argument("--test-templates", type=int, default=300)
    p.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0 = clean)")
    p.add_argument("--test-augment", type=float, default=0.0)
    p.add_argument(
        "--telephone",
        type=float,
        default=0.0,
        help="share of train/dev clips through the telephone channel (8 kHz, G.711)",
    )
    p.add_argument("--workers", type=int, default=2, help="synthesis processes")
    p.add_argument("--no-progress", action="store_true")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--plan-out", type=Path, help="only write the plan (JSON lines) to this file")
    plan.add_argument(
        "--from-plan", type=Path, help="render this plan (from --plan-out) instead of planning"
    )
    p.add_argument(
        "--testset",
        action="store_true",
        help="write only a small FLAC test set (manifest.jsonl) in held-out voices",
    )
    p.add_argument("--templates", type=int, default=40, help="--testset: template sentences")
    p.add_argument("--independent", type=int, default=50, help="--testset: independent sentences")
    p.add_argument("--sample", type=Path, help="--testset: also write a ~5 s sample WAV (+ .txt)")
    p.add_argument(
        "--asterisk",
        metavar="LANG",
        help="write only a real-speech test set from Debian's Asterisk prompts (en, es; "
        "make tools installs them): OUT/manifest.jsonl + testset.json",
    )
    p.add_argument("--split", choices=("test", "dev"), default="test", help="--asterisk: split")
    p.add_argument("--limit", type=int, help="--asterisk: at most this many prompts")
    return p  # fmt: skip


def _corpus_config(args: argparse.Namespace) -> CorpusConfig:
    try:
        return CorpusConfig(
            hours=18.0 if args.hours is None else args.hours,
            utterances=args.utterances,
            seed=args.seed,
            template_fraction=args.template_fraction,
            open_mix=tuple(args.open_mix),
            dev_fraction=args.dev_fraction,
            test_templates=args.test_templates,
            augment=args.augment,
            test_augment=args.test_augment,
            telephone=args.telephone,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise DataConfigError(f"invalid data option {where}: {first['msg']}") from exc


def data_main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1:
        raise DataConfigError("--workers must be at least 1")
    if args.asterisk:
        from kubescribe_modeling.data.asterisk import build_testset as build_asterisk

        info = build_asterisk(args.asterisk, args.out, args.split, args.limit)
        print(json.dumps(info, ensure_ascii=False))
        return 0
    if args.testset:
        rows = build_testset(
            args.out, args.templates, args.independent, seed=args.seed, workers=args.workers
        )
        print(json.dumps({"utterances": len(rows), "out": str(args.out)}))
        if args.sample is not None:
            print(f"sample: {write_sample(args.sample)}")
        return 0
    plan: list[Utterance] | None = None
    if args.from_plan is not None:
        config, plan = read_plan(args.from_plan)
    else:
        config = _corpus_config(args)
        if args.plan_out is not None:
            plan = plan_corpus(config)
            write_plan(args.plan_out, config, plan)
            print(json.dumps({"plan": str(args.plan_out), "utterances": len(plan)}))
            return 0
    summary = build_corpus(
        config, args.out, workers=args.workers, progress=not args.no_progress, plan=plan
    )
    print(json.dumps(summary["splits"], indent=2), file=sys.stderr)
    print(f"corpus written to {args.out} in {summary['generation_seconds']} s", file=sys.stderr)
    return 0
