"""The small committed test set: FLAC clips of held-out voices and sentences, clean audio."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from kubescribe_modeling.data.build import write_utterances
from kubescribe_modeling.data.plan import (
    Utterance,
    independent_sentences,
    test_template_sentences,
)
from kubescribe_modeling.data.voices import HELD_OUT_VOICES

__all__ = ["build_testset", "plan_testset"]


def plan_testset(templates: int, independent: int, seed: int = 0) -> list[Utterance]:
    """Held-out template and independent sentences, alternating between the held-out voices."""
    rng = random.Random(seed)
    texts = [("template", t) for t in test_template_sentences(templates)]
    pool = independent_sentences()
    texts += [("independent", t) for t in rng.sample(pool, min(independent, len(pool)))]
    plan = []
    for i, (source, text) in enumerate(texts):
        plan.append(
            Utterance(
                id=f"{source}-{i:03d}",
                split="test",
                source=source,  # type: ignore[arg-type]
                text=text,
                voice=HELD_OUT_VOICES[i % len(HELD_OUT_VOICES)],
                speed=rng.randint(150, 185),
                pitch=rng.randint(35, 65),
                seed=rng.randrange(2**31),
                augment=0.0,
            )
        )
    return plan


def build_testset(
    out: Path, templates: int, independent: int, seed: int = 0, workers: int = 2
) -> list[dict[str, Any]]:
    """Write ``out/{templates,independent}/*.flac`` and ``out/manifest.jsonl``."""
    plan = plan_testset(templates, independent, seed)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    flat = [
        Utterance(**{**u.__dict__, "split": "test"})  # same entry, flat layout below
        for u in plan
    ]
    rows = write_utterances(flat, tmp, workers=workers, suffix=".flac", progress=False)
    for row, utt in zip(rows, plan, strict=True):
        src = tmp / row["audio"]
        rel = Path(f"{'templates' if utt.source == 'template' else 'independent'}/{utt.id}.flac")
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        src.rename(tmp / rel)
        row["audio"] = rel.as_posix()
    shutil.rmtree(tmp / "test", ignore_errors=True)
    with (tmp / "manifest.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            keys = ("audio", "text", "source", "voice", "duration")
            f.write(json.dumps({k: row[k] for k in keys}) + "\n")
    if out.exists():
        for child in ("templates", "independent", "manifest.jsonl"):
            target = out / child
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for child in ("templates", "independent", "manifest.jsonl"):
        (tmp / child).rename(out / child)
    shutil.rmtree(tmp)
    return rows
