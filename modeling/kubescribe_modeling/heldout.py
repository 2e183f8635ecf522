"""Honest held-out figures for a shipped model: by speaker, by text, wideband and by telephone.

A model's test WER is only as good as the test's independence. This module measures what a
release can honestly claim:

* **by speaker**: WER per held-out voice, so a voice the model did in fact hear (demo 2.0.0
  trained on ``aunty``, the formant twin of held-out ``f4``) is reported apart from the
  unseen one;
* **by text**: the independent dev sentences (written by hand, never trained or tuned on), the
  independent test sentences, and the held-out template sentences — in-distribution: the
  generator's own frames, most of them one slot away from training sentences;
* **by channel**: each set also as a phone call carries it — 8 kHz G.711 μ-law WAV files,
  coded with the runtime's codec and resampled by the runtime, as a deployment gets them;
* **the training text**: from the training plan, how many clips the twin voice spoke, how
  many test and dev words training never saw, how close the template sentences came.

    python -m kubescribe_modeling.heldout render --out data/heldout
    python -m kubescribe_modeling.heldout measure examples/models/demo --data data/heldout \\
        --train-plan plan.jsonl --results examples/models/demo/results.json

``measure`` adds a ``heldout`` section to ``results.json``; ``kubescribe_modeling.card``
renders it first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import soundfile as sf
import soxr
from kubescribe_runtime import g711

from kubescribe_modeling.data.plan import (
    TEST_TEMPLATE_POOL,
    CorpusConfig,
    Utterance,
    held_out_template_sentences,
    independent_sentences,
    plan_corpus,
)
from kubescribe_modeling.data.templates import TEMPLATES
from kubescribe_modeling.data.tuning import dev_sentences, oov_rate
from kubescribe_modeling.data.voices import EXCLUDED_TWINS, HELD_OUT_VOICES
from kubescribe_modeling.dataset import read_manifest
from kubescribe_modeling.decode import word_error_rate
from kubescribe_modeling.evaluate import EvalReport, evaluate_artifact

__all__ = [
    "SETS",
    "g711_wav",
    "measure",
    "plan_heldout",
    "telephone_copy",
    "training_text_facts",
    "wer_by_voice",
]

#: Manifests under the data folder: (file stem, source in it, how the card names the text).
SETS: tuple[tuple[str, str, str], ...] = (
    ("dev", "independent", "independent dev sentences"),
    ("test", "independent", "independent test sentences"),
    ("test", "template", "held-out template sentences"),
)
#: The telephone copy of each manifest is ``<stem>-pcmu.jsonl``.
TELEPHONE_LAW: g711.Law = "pcmu"


def plan_heldout(config: CorpusConfig | None = None, seed: int = 0) -> dict[str, list[Utterance]]:
    """The test split of ``config`` (``kubescribe data --hours 18 --seed 0`` by default) and
    every independent dev sentence spoken by each held-out voice, clean, at the test split's
    speeds and pitches."""
    config = config or CorpusConfig(hours=18.0, seed=0)
    test = [u for u in plan_corpus(config) if u.split == "test"]
    rng, dev = random.Random(seed), []
    for i, text in enumerate(dev_sentences()):
        for k, voice in enumerate(HELD_OUT_VOICES):
            dev.append(
                Utterance(
                    id=f"heldout-dev-{len(HELD_OUT_VOICES) * i + k:04d}",
                    split="test",
                    source="independent",
                    text=text,
                    voice=voice,
                    speed=rng.randint(*config.speed),
                    pitch=rng.randint(*config.pitch),
                    seed=rng.randrange(2**31),
                    augment=config.test_augment,
                )
            )
    return {"test": test, "dev": dev}


def _write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    keys = ("audio", "text", "source", "voice", "duration")
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in keys}, ensure_ascii=False) + "\n")


def g711_wav(codes: bytes, law: g711.Law) -> bytes:
    """A WAV file holding G.711 bytes as they are (format 7 μ-law, 6 A-law; 8 kHz mono)."""
    fmt = struct.pack("<HHIIHHH", 7 if law == "pcmu" else 6, 1, g711.SAMPLE_RATE,
                      g711.SAMPLE_RATE, 1, 8, 0)  # fmt: skip
    body = b"".join(
        [
            b"WAVE",
            b"fmt " + struct.pack("<I", len(fmt)) + fmt,
            b"fact" + struct.pack("<II", 4, len(codes)),
            b"data" + struct.pack("<I", len(codes)) + codes + b"\0" * (len(codes) % 2),
        ]
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def telephone_copy(manifest: Path, out: Path, law: g711.Law = TELEPHONE_LAW) -> Path:
    """Every clip of ``manifest`` as a call: 8 kHz G.711 WAVs beside it, and their manifest
    ``<stem>-<law>.jsonl``. Returns the new manifest's path."""
    rows = []
    for utt in read_manifest(manifest):
        audio, rate = sf.read(str(utt.audio), dtype="float32")
        phone = soxr.resample(audio, rate, g711.SAMPLE_RATE, quality="HQ")
        rel = Path(law) / utt.audio.relative_to(manifest.parent).with_suffix(".wav")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(g711_wav(g711.from_float(phone, law), law))
        rows.append(
            {
                "audio": rel.as_posix(),
                "text": utt.text,
                "source": utt.source,
                "voice": utt.voice,
                "duration": round(phone.size / g711.SAMPLE_RATE, 3),
            }
        )
    path = out / f"{manifest.stem}-{law}.jsonl"
    _write_manifest(path, rows)
    return path


def render_heldout(out: Path, workers: int = 2) -> dict[str, int]:
    """Write ``out/{test,dev}.jsonl`` (FLAC) and their telephone copies; counts per manifest."""
    from kubescribe_modeling.data.build import write_utterances

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for stem, plan in plan_heldout().items():
        rows = write_utterances(plan, out, workers=workers, suffix=".flac", progress=False)
        _write_manifest(out / f"{stem}.jsonl", rows)
        phone = telephone_copy(out / f"{stem}.jsonl", out)
        counts[stem] = counts[phone.stem] = len(rows)
    return counts


def wer_by_voice(report: EvalReport, voices: Sequence[str], sources: Sequence[str],
                 source: str) -> dict[str, dict[str, float | int]]:  # fmt: skip
    """WER and utterance count per voice, over the utterances of one ``source``."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (voice, src) in enumerate(zip(voices, sources, strict=True)):
        if src == source:
            groups[voice].append(i)
    return {
        voice: {
            "wer": round(
                word_error_rate(
                    [report.references[i] for i in idx], [report.hypotheses[i] for i in idx]
                ),
                4,
            ),
            "utterances": len(idx),
        }
        for voice, idx in sorted(groups.items())
    }


def training_text_facts(plan_path: Path) -> dict[str, Any]:
    """What the training plan (``kubescribe data --plan-out``) held, against the held-out sets."""
    raw = plan_path.read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines()[1:] if line.strip()]
    train = [r for r in rows if r["split"] == "train"]
    words = {w for r in train for w in r["text"].split()}
    templates = [r["text"] for r in train if r["source"] == "template"]
    held_templates = held_out_template_sentences(TEST_TEMPLATE_POOL)
    return {
        "plan_sha256": hashlib.sha256(raw).hexdigest(),
        "train_utterances": len(train),
        "twin_voice_utterances": sum(r["voice"].partition("+")[2] in EXCLUDED_TWINS for r in train),
        "oov_independent_dev": round(oov_rate(words, dev_sentences()), 4),
        "oov_independent_test": round(oov_rate(words, independent_sentences()), 4),
        "template_frames": len(TEMPLATES),
        "train_template_sentences": len(templates),
        "held_out_templates": len(held_templates),
        "held_out_templates_one_word_from_train": round(
            _one_word_share(templates, held_templates), 4
        ),
    }


def _one_word_share(train: Iterable[str], held: Sequence[str]) -> float:
    """Share of ``held`` sentences equal to a ``train`` sentence but for one word."""
    keys: set[tuple[object, ...]] = set()
    for text in train:
        w = text.split()
        keys.update((len(w), i, *w[:i], "*", *w[i + 1 :]) for i in range(len(w)))
    near = 0
    for text in held:
        w = text.split()
        near += any((len(w), i, *w[:i], "*", *w[i + 1 :]) in keys for i in range(len(w)))
    return near / len(held) if held else 0.0


def measure(artifact: Path, data: Path, model_file: str = "model.onnx") -> list[dict[str, Any]]:
    """WER per voice for every set of :data:`SETS`, wideband and through the telephone."""
    rows = []
    for channel, suffix in (("wideband", ""), ("telephone 8 kHz μ-law", f"-{TELEPHONE_LAW}")):
        for stem, source, label in SETS:
            manifest = data / f"{stem}{suffix}.jsonl"
            utts = read_manifest(manifest)
            report = evaluate_artifact(artifact, manifest, model_file)
            by_voice = wer_by_voice(
                report, [u.voice for u in utts], [u.source for u in utts], source
            )
            rows.append(
                {"text": label, "audio": channel, "manifest": str(manifest), "voices": by_voice}
            )
    return rows


def _committed(artifact: Path, testset: Path, model_file: str) -> dict[str, Any]:
    utts = read_manifest(testset / "manifest.jsonl")
    report = evaluate_artifact(artifact, testset, model_file)
    voices = [u.voice for u in utts]
    return {
        "testset": str(testset),
        "wer": round(report.wer, 4),
        "voices": {
            v: {
                "wer": round(
                    word_error_rate(
                        [r for r, x in zip(report.references, voices, strict=True) if x == v],
                        [h for h, x in zip(report.hypotheses, voices, strict=True) if x == v],
                    ),
                    4,
                ),
                "utterances": voices.count(v),
            }
            for v in sorted(set(voices))
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubescribe_modeling.heldout")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="synthesise the held-out sets (espeak-ng)")
    render.add_argument("--out", type=Path, default=Path("data/heldout"))
    render.add_argument("--workers", type=int, default=2)
    m = sub.add_parser("measure", help="WER by voice, text and channel into results.json")
    m.add_argument("artifact", type=Path)
    m.add_argument("--data", type=Path, default=Path("data/heldout"))
    m.add_argument("--model-file", default="model.onnx")
    m.add_argument("--testset", type=Path, default=Path("examples/testset"))
    m.add_argument("--train-plan", type=Path, help="the model's training plan (--plan-out)")
    m.add_argument("--twin-voice", default="en-us+f4", help="a held-out voice training heard")
    m.add_argument(
        "--weights-tuned-on",
        choices=("dev", "test"),
        default="dev",
        help="which split tuned the model's open-vocabulary weights (test: before 3.0)",
    )
    m.add_argument("--results", type=Path, required=True, help="results.json to add it to")
    args = parser.parse_args(argv)
    if args.command == "render":
        print(json.dumps(render_heldout(args.out, args.workers)))
        return 0
    section: dict[str, Any] = {
        "artifact": str(args.artifact),
        "model_file": args.model_file,
        "twin_voice": args.twin_voice,
        "weights_tuned_on": args.weights_tuned_on,
        "rows": measure(args.artifact, args.data, args.model_file),
        "committed": _committed(args.artifact, args.testset, args.model_file),
    }
    if args.train_plan is not None:
        section["training_text"] = training_text_facts(args.train_plan)
    results = json.loads(args.results.read_text(encoding="utf-8"))
    results["heldout"] = section
    args.results.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(section, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
