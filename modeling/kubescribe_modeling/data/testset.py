"""The small committed test set: FLAC clips of held-out voices and sentences, clean audio."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import soundfile as sf

from kubescribe_modeling.data.build import render, write_utterances
from kubescribe_modeling.data.plan import (
    TEST_TEMPLATE_POOL,
    Utterance,
    held_out_template_sentences,
    independent_sentences,
)
from kubescribe_modeling.data.synth import SAMPLE_RATE, require_espeak
from kubescribe_modeling.data.voices import HELD_OUT_VOICES

__all__ = ["build_testset", "plan_testset", "write_sample"]


#: Template sentences longer than this are skipped, to keep the committed set under 5 MB.
MAX_TEMPLATE_WORDS = 14


def plan_testset(templates: int, independent: int, seed: int = 0) -> list[Utterance]:
    """Held-out template and independent sentences, alternating between the held-out voices.

    The template sentences are the first short ones of the corpus's held-out template stream
    (:func:`held_out_template_sentences`), so no corpus ever trains on them.
    """
    rng = random.Random(seed)
    pool = held_out_template_sentences(TEST_TEMPLATE_POOL)
    short = [t for t in pool if len(t.split()) <= MAX_TEMPLATE_WORDS]
    texts = [("template", t) for t in short[:templates]]
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
    require_espeak()
    plan = plan_testset(templates, independent, seed)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = _write_testset(plan, tmp, workers)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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


def _write_testset(plan: list[Utterance], tmp: Path, workers: int) -> list[dict[str, Any]]:
    rows = write_utterances(plan, tmp, workers=workers, suffix=".flac", progress=False)
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
    return rows


def write_sample(path: Path) -> str:
    """Write a ~5 s clean clip of a held-out voice to ``path`` and its transcript beside it."""
    text = next(
        t for t in held_out_template_sentences(TEST_TEMPLATE_POOL) if 12 <= len(t.split()) <= 16
    )
    utt = Utterance(
        id="sample",
        split="test",
        source="template",
        text=text,
        voice=HELD_OUT_VOICES[0],
        speed=160,
        pitch=50,
        seed=0,
        augment=0.0,
    )
    audio = render(utt)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    return text
