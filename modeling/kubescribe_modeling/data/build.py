"""Corpus building: synthesise and augment planned utterances in parallel and write them.

The directory appears atomically: everything is written to a temporary sibling, which is
renamed to ``out`` at the end; the ``READY`` marker is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from tqdm import tqdm

from kubescribe_modeling.data.augment import augment, draw_augmentation
from kubescribe_modeling.data.plan import CorpusConfig, Utterance, audit_plan, plan_corpus
from kubescribe_modeling.data.resources import digests
from kubescribe_modeling.data.synth import SAMPLE_RATE, espeak_version, require_espeak, synthesize
from kubescribe_modeling.data.voices import HELD_OUT_VOICES
from kubescribe_modeling.errors import ModelingError

__all__ = ["READY", "build_corpus", "read_plan", "render", "write_plan", "write_utterances"]

READY = "READY"


class PlanError(ModelingError):
    """A --from-plan file is missing or malformed."""


def render(utt: Utterance) -> np.ndarray:
    """The final 16 kHz waveform of one utterance (synthesis, then augmentation)."""
    audio = synthesize(utt.text, utt.voice, utt.speed, utt.pitch)
    return augment(audio, SAMPLE_RATE, draw_augmentation(utt.seed, utt.augment, utt.telephone))


def _render_and_write(job: tuple[Utterance, str, str]) -> dict[str, Any]:
    utt, root, rel = job
    audio = render(utt)
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "FLAC" if rel.endswith(".flac") else "WAV"
    sf.write(path, audio, SAMPLE_RATE, format=fmt, subtype="PCM_16")
    return {
        "audio": rel,
        "text": utt.text,
        "voice": utt.voice,
        "source": utt.source,
        "duration": round(audio.size / SAMPLE_RATE, 3),
        "split": utt.split,
        "id": utt.id,
    }


def write_utterances(
    utterances: Sequence[Utterance],
    root: Path,
    workers: int = 2,
    suffix: str = ".wav",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Render every utterance under ``root``; manifest rows in the order of ``utterances``."""
    require_espeak()
    jobs = [(u, str(root), u.path[: -len(".wav")] + suffix) for u in utterances]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), unit="utt", disable=not progress, desc="synthesising")
    if workers <= 1:
        for job in jobs:
            rows.append(_render_and_write(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(_render_and_write, jobs, chunksize=16):
                rows.append(row)
                bar.update()
    bar.close()
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    keys = ("audio", "text", "voice", "source", "duration")
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n")


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, hours, voices and text mix per split."""
    out: dict[str, Any] = {}
    for split in ("train", "dev", "test"):
        part = [r for r in rows if r["split"] == split]
        out[split] = {
            "utterances": len(part),
            "hours": round(sum(r["duration"] for r in part) / 3600, 3),
            "voices": len({r["voice"] for r in part}),
            "sources": dict(Counter(r["source"] for r in part)),
        }
    return out


def write_plan(path: Path, config: CorpusConfig, plan: Sequence[Utterance]) -> None:
    """The plan as JSON lines: the config first, then one utterance per line.

    Planning needs the text resources (and wordfreq); rendering needs only espeak-ng. A plan
    written here can be rendered on another machine (e.g. a GPU host) with ``--from-plan``.
    """
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"config": config.model_dump(mode="json")}) + "\n")
        for utt in plan:
            f.write(json.dumps(asdict(utt), ensure_ascii=False) + "\n")


def read_plan(path: Path) -> tuple[CorpusConfig, list[Utterance]]:
    """Inverse of :func:`write_plan`; a clear error for a file that is not a plan, or for a
    plan that breaks the split rules (:func:`audit_plan`: e.g. one made before ``aunty``, the
    formant twin of a held-out voice, left the train voices)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        config = CorpusConfig.model_validate(json.loads(lines[0])["config"])
        plan = [Utterance(**json.loads(line)) for line in lines[1:] if line.strip()]
    except FileNotFoundError as exc:
        raise PlanError(f"{path}: plan not found") from exc
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{path}: not a corpus plan written by --plan-out ({exc})") from exc
    problems = audit_plan(plan)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        listed = "; ".join(problems[:3])
        raise PlanError(f"{path}: the plan breaks the split rules, plan it again: {listed}{more}")
    return config, plan


def build_corpus(
    config: CorpusConfig,
    out: Path,
    workers: int = 2,
    progress: bool = True,
    plan: Sequence[Utterance] | None = None,
) -> dict[str, Any]:
    """Plan (unless ``plan`` is given), synthesise and write the corpus to ``out`` atomically."""
    started = time.monotonic()
    require_espeak()
    if plan is None:
        plan = plan_corpus(config)
    out = out.resolve()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _write_corpus(config, plan, tmp, workers, progress, started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written corpus behind
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    (out / READY).write_text(json.dumps(summary["splits"]) + "\n")
    return summary


def _write_corpus(
    config: CorpusConfig,
    plan: Sequence[Utterance],
    tmp: Path,
    workers: int,
    progress: bool,
    started: float,
) -> dict[str, Any]:
    rows = write_utterances(plan, tmp, workers=workers, progress=progress)
    for split in ("train", "dev", "test"):
        _write_jsonl(tmp / f"{split}.jsonl", (r for r in rows if r["split"] == split))
    summary = {
        "config": config.model_dump(mode="json"),
        "held_out_voices": list(HELD_OUT_VOICES),
        "espeak_ng": espeak_version(),
        "resources_sha256": digests(),
        "splits": summarize(rows),
        "generation_seconds": round(time.monotonic() - started, 1),
        "workers": workers,
    }
    (tmp / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def utterance_record(utt: Utterance) -> dict[str, Any]:
    """A plan entry as plain data (for debugging and tests)."""
    return asdict(utt)
