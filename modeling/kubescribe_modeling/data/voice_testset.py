"""A synthetic test set in voices that no training clip has: clean wideband clips.

The real-voices corpus (:mod:`kubescribe_modeling.data.realvoices`) draws its voices from
:func:`~kubescribe_modeling.data.realvoices.voice_catalogue`; the voices here must be outside
it (``es+f4``, ``es-419+m5``: espeak-ng variants the catalogue leaves out), and no sentence here
is a training sentence or says a real-speech dev or test sentence. The sentences come from the
same generator as the training text, so this measures a new voice, not new wording.

    python -m kubescribe_modeling.data.voice_testset --language es --voice es+f4 \\
        --voice es-419+m5 --utterances 60 --out data/es-heldout-voice \\
        --exclude data/realvoices-es/train.jsonl --exclude data/asterisk/es-test
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from kubescribe_modeling.data.realvoices import (
    SAMPLE_RATE,
    Channel,
    Job,
    Voice,
    leaks,
    render,
    sentence_maker,
    voice_catalogue,
)
from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.text_lang import normalizer

__all__ = ["CLEAN", "plan_voice_testset", "write_voice_testset"]

#: no perturbation, no room, no background, wideband
CLEAN = Channel(
    speed=1.0, pitch_cents=0, reverb=None, snr_db=None, babble=False, band=None, codec=None
)


def plan_voice_testset(
    language: str, voices: Sequence[str], utterances: int, exclude: Sequence[str], seed: int = 1
) -> list[Job]:
    """``utterances`` clean clips, voices in turn; refuses a voice training may use."""
    trained = {v.name for v in voice_catalogue(language)}
    if not voices or any(v in trained for v in voices):
        raise ModelingError(f"held-out voices must be outside the training catalogue: {voices}")
    rng = random.Random(seed)
    norm = normalizer(language)
    excluded = {norm(t) for t in exclude}
    held = [t for t in excluded if t]
    makers, jobs, seen = sentence_maker(language), list[Job](), set[str]()
    while len(jobs) < utterances:
        text = norm(rng.choice(makers)(rng))  # type: ignore[operator]
        if not text or text in seen or leaks(text, held):
            continue
        seen.add(text)
        voice = Voice("espeak-ng", voices[len(jobs) % len(voices)])
        jobs.append(Job(f"hv-{language}-{len(jobs):04d}", text, voice, 160, CLEAN, len(jobs)))
    return jobs


def write_voice_testset(language: str, jobs: Sequence[Job], out: Path) -> dict[str, Any]:
    """``out/manifest.jsonl`` + FLAC clips + ``testset.json`` (what ``evaluate`` reports)."""
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    for job in jobs:
        audio = np.clip(render(job), -1, 1)
        rel = f"clips/{job.id}.flac"
        sf.write(str(out / rel), audio, SAMPLE_RATE)
        rows.append(
            {
                "audio": rel,
                "text": job.text,
                "voice": job.voice.name,
                "duration": round(audio.size / SAMPLE_RATE, 3),
            }
        )
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    voices = sorted({job.voice.name for job in jobs})
    info = {
        "name": f"synthetic {language}, held-out voices {', '.join(voices)}",
        "language": language,
        "speech": "synthetic",
        "channel": "wideband 16 kHz",
        "voice": ", ".join(voices),
        "utterances": len(rows),
    }
    (out / "testset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    from kubescribe_modeling.dataset import read_manifest
    from kubescribe_modeling.evaluate import manifest_path

    p = argparse.ArgumentParser(prog="python -m kubescribe_modeling.data.voice_testset")
    p.add_argument("--language", required=True)
    p.add_argument("--voice", action="append", required=True, help="held-out voice (repeatable)")
    p.add_argument("--utterances", type=int, default=60)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="manifest or test set whose sentences must not appear (repeatable)",
    )
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    exclude = [u.text for path in args.exclude for u in read_manifest(manifest_path(path))]
    jobs = plan_voice_testset(args.language, args.voice, args.utterances, exclude, args.seed)
    print(json.dumps(write_voice_testset(args.language, jobs, args.out), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
