"""Training speech aimed at real callers: several engines, many voices, the telephone channel.

The demo corpus is one engine's formant voices on clean wideband audio, and the demo model does
not transcribe people. This corpus widens all three axes a real call differs on:

* **engines and voices**: espeak-ng's languages × voice variants, Flite's voices (English:
  ``kal``, ``kal16``, ``awb``, ``rms``, ``slt``, CMU ARCTIC recordings of real speakers), and
  MBROLA's diphone voices (``mb-…``, recorded from real speakers) where the ``mbrola`` program
  and the voice are installed — they are in Debian's *non-free* section, which this project's
  machines do not enable, so :func:`voice_catalogue` lists them only where present;
* **the channel** (:func:`draw_channel`, applied by Debian's ``sox``): speed and pitch
  perturbation, room reverberation, background babble or noise, a telephone band limit, and a
  narrowband codec — G.711 μ-law or A-law, or GSM 06.10 — before the audio returns to 16 kHz;
* **independence**: :func:`leaks` drops any training sentence that says a real-speech dev or
  test sentence (:mod:`kubescribe_modeling.data.asterisk`), so model selection on the dev split
  and the test figure stay honest.

    python -m kubescribe_modeling.data.realvoices --language es --utterances 3000 \\
        --out data/realvoices-es --held data/asterisk/es-dev --held data/asterisk/es-test
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.text_lang import normalizer

__all__ = [
    "CODECS",
    "Channel",
    "Job",
    "Voice",
    "draw_channel",
    "leaks",
    "plan_jobs",
    "sentence_maker",
    "sox_commands",
    "voice_catalogue",
]

SAMPLE_RATE = 16_000
#: sox's file type and encoding options of each narrowband codec (8 kHz).
CODECS: dict[str, tuple[str, ...]] = {
    "mu-law": ("-t", "raw", "-e", "mu-law", "-b", "8"),
    "a-law": ("-t", "raw", "-e", "a-law", "-b", "8"),
    "gsm": ("-t", "gsm"),
}
_FLOAT = ("-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1")
_ESPEAK_LANGUAGES = {
    "en": ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc"),
    "es": ("es", "es-419"),
}
_VARIANTS = ("m1", "m2", "m3", "m4", "m6", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt2",
             "klatt3", "Andy", "Annie", "Denis", "Diogo", "Gene", "Hugo", "Jacky", "Lee",
             "Mario", "Michael", "Mike", "adam", "anika", "belinda", "benjamin", "caleb",
             "david", "edward", "iven", "john", "linda", "marcelo", "max", "miguel", "norbert",
             "pablo", "paul", "pedro", "quincy", "rob", "steph", "travis", "victor")  # fmt: skip
_FLITE_VOICES = {"en": ("kal", "kal16", "awb", "rms", "slt")}
_MBROLA_VOICES = {"en": ("mb-us1", "mb-us2", "mb-us3", "mb-en1"),
                  "es": ("mb-es1", "mb-es2", "mb-es3", "mb-es4", "mb-mx1", "mb-mx2",
                         "mb-vz1")}  # fmt: skip


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak-ng | flite | mbrola (through espeak-ng)
    name: str


@dataclass(frozen=True)
class Channel:
    speed: float  # sox speed factor (tempo and pitch together)
    pitch_cents: int  # sox pitch shift
    reverb: int | None  # sox reverberance 0-100, None: dry
    snr_db: float | None  # background at this SNR, None: none
    babble: bool  # background is other speech (else coloured noise)
    band: tuple[int, int] | None  # telephone band limit in Hz, None: the codec's own
    codec: str | None  # a key of CODECS, None: wideband


@dataclass(frozen=True)
class Job:
    id: str
    text: str  # normalised
    voice: Voice
    rate: int  # engine speaking rate (espeak-ng words per minute; flite: 100 = normal)
    channel: Channel
    seed: int


def _mbrola_installed(name: str) -> bool:
    return shutil.which("mbrola") is not None and Path(f"/usr/share/mbrola/{name[3:]}").exists()


def voice_catalogue(language: str) -> list[Voice]:
    """Every voice of every installed engine for ``language``."""
    if language not in _ESPEAK_LANGUAGES:
        raise ModelingError(f"no training voices for language {language!r}")
    voices = [
        Voice("espeak-ng", f"{lang}+{variant}")
        for lang in _ESPEAK_LANGUAGES[language]
        for variant in _VARIANTS
    ]
    if shutil.which("flite"):
        voices += [Voice("flite", v) for v in _FLITE_VOICES.get(language, ())]
    voices += [Voice("mbrola", v) for v in _MBROLA_VOICES[language] if _mbrola_installed(v)]
    return voices


def draw_channel(rng: random.Random, telephone: float = 0.8) -> Channel:
    """Random channel parameters: ``telephone`` of the clips go through a narrowband codec."""
    narrow = rng.random() < telephone
    return Channel(
        speed=round(rng.uniform(0.9, 1.1), 3),
        pitch_cents=rng.randint(-250, 250),
        reverb=rng.randint(10, 60) if rng.random() < 0.4 else None,
        snr_db=round(rng.uniform(5, 30), 1) if rng.random() < 0.6 else None,
        babble=rng.random() < 0.5,
        band=(rng.randint(200, 400), rng.randint(3000, 3500)) if narrow else None,
        codec=rng.choice(sorted(CODECS)) if narrow else None,
    )


def sox_commands(channel: Channel) -> list[list[str]]:
    """The sox pipeline (float32 16 kHz raw on stdin and stdout of the whole): the effects,
    then through the codec and back where the channel has one."""
    effects = ["speed", str(channel.speed), "pitch", str(channel.pitch_cents)]
    if channel.reverb is not None:
        effects += ["reverb", str(channel.reverb)]
    if channel.codec is None:
        return [["sox", *_FLOAT, "-r", "16000", "-", *_FLOAT, "-", *effects, "rate", "16000"]]
    if channel.band is not None:
        effects += ["sinc", f"{channel.band[0]}-{channel.band[1]}"]
    codec = CODECS[channel.codec]
    return [
        [
            "sox",
            *_FLOAT,
            "-r",
            "16000",
            "-",
            "-r",
            "8000",
            "-c",
            "1",
            *codec,
            "-",
            *effects,
            "rate",
            "8000",
        ],
        ["sox", "-r", "8000", "-c", "1", *codec, "-", *_FLOAT, "-r", "16000", "-"],
    ]


def leaks(text: str, held: Iterable[str], min_words: int = 4) -> bool:
    """Whether normalised ``text`` is a held sentence or says one of ``min_words`` words or
    more (word-aligned)."""
    padded = f" {text} "
    return any(text == h or (len(h.split()) >= min_words and f" {h} " in padded) for h in held)


def sentence_maker(language: str) -> tuple[object, ...]:
    if language == "es":
        from kubescribe_modeling.data.text_es import spanish_sentence

        return (spanish_sentence,)
    from kubescribe_modeling.data.open_vocab import grammar_sentence
    from kubescribe_modeling.data.templates import template_sentence

    return (template_sentence, grammar_sentence)


def plan_jobs(
    language: str,
    utterances: int,
    held: Sequence[str],
    seed: int = 0,
    voices: Sequence[Voice] | None = None,
    telephone: float = 0.8,
) -> list[Job]:
    """``utterances`` clips: a sentence none of ``held`` leaks into, a voice, a channel."""
    rng = random.Random(seed)
    norm = normalizer(language)
    makers = sentence_maker(language)
    voices = list(voices or voice_catalogue(language))
    held_set = [h for h in {norm(h) for h in held} if h]
    jobs: list[Job] = []
    while len(jobs) < utterances:
        text = norm(rng.choice(makers)(rng))  # type: ignore[operator]
        if not text or leaks(text, held_set):
            continue
        voice = rng.choice(voices)
        rate = rng.randint(130, 200) if voice.engine != "flite" else rng.randint(80, 120)
        jobs.append(
            Job(
                f"rv-{language}-{len(jobs):06d}",
                text,
                voice,
                rate,
                draw_channel(rng, telephone),
                rng.randrange(2**31),
            )
        )
    return jobs


def _speak(job: Job) -> np.ndarray:
    """The engine's audio, float32 mono at 16 kHz."""
    from kubescribe_modeling.data.synth import synthesize

    if job.voice.engine in ("espeak-ng", "mbrola"):
        return synthesize(job.text, job.voice.name, job.rate, 50)
    import soxr

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "f.wav"
        stretch = f"{100 / job.rate:.3f}"  # flite's duration_stretch: > 1 is slower
        subprocess.run(
            [
                "flite",
                "-voice",
                job.voice.name,
                "--setf",
                f"duration_stretch={stretch}",
                "-t",
                job.text,
                "-o",
                str(out),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        audio, rate = sf.read(str(out), dtype="float32")
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE)
    return np.asarray(audio, dtype=np.float32)


def _background(job: Job, n: int, rng: np.random.Generator) -> np.ndarray:
    if job.channel.babble:
        from kubescribe_modeling.data.synth import synthesize

        # A few voices at once, from the same engine: speech-shaped noise of the right band.
        words = job.text.split()
        accents = _ESPEAK_LANGUAGES[job.id.split("-")[1]]
        mix = np.zeros(n, dtype=np.float32)
        for k, variant in enumerate(("m3", "f2")):
            shuffled = " ".join(rng.permutation(words)) or "a"
            talker = synthesize(shuffled, f"{accents[k % len(accents)]}+{variant}", 170, 50)
            reps = int(np.ceil(n / max(len(talker), 1)))
            mix += np.tile(talker, reps)[:n]
        return mix
    from kubescribe_modeling.data.augment import _colored_noise

    return _colored_noise(n, float(rng.uniform(0, 2)), rng).astype(np.float32)


def render(job: Job) -> np.ndarray:
    """Speak the job and pass it through its channel; float32 mono at 16 kHz."""
    audio = _speak(job)
    rng = np.random.default_rng(job.seed)
    if job.channel.snr_db is not None and audio.size:
        noise = _background(job, audio.size, rng)
        p_s, p_n = float(np.mean(audio**2)), float(np.mean(noise**2)) + 1e-12
        audio = audio + noise * np.sqrt(p_s / (p_n * 10 ** (job.channel.snr_db / 10)))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    data = (audio * (0.7 / peak) if peak else audio).astype(np.float32).tobytes()
    for cmd in sox_commands(job.channel):
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise ModelingError(f"sox failed on {job.id}: {proc.stderr.decode()[:200]}")
        data = proc.stdout
    return np.frombuffer(data, dtype=np.float32).copy()


def _render_and_write(args: tuple[Job, Path]) -> dict[str, Any]:
    job, out = args
    audio = render(job)
    rel = Path("train") / job.id[-3:] / f"{job.id}.flac"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out / rel), np.clip(audio, -1, 1), SAMPLE_RATE)
    return {
        "audio": rel.as_posix(),
        "text": job.text,
        "source": job.voice.engine,
        "voice": job.voice.name,
        "duration": round(audio.size / SAMPLE_RATE, 3),
        "channel": asdict(job.channel),
    }


def write_corpus(jobs: Sequence[Job], out: Path, workers: int = 1) -> dict[str, object]:
    """Render ``jobs`` into ``out/train.jsonl`` + FLAC files; progress lines on stderr."""
    from multiprocessing import Pool

    out.mkdir(parents=True, exist_ok=True)
    started, rows = time.monotonic(), list[dict[str, Any]]()
    with Pool(workers) as pool:
        for i, row in enumerate(pool.imap(_render_and_write, [(j, out) for j in jobs], 8), 1):
            rows.append(row)
            if i % 200 == 0 or i == len(jobs):
                print(
                    f"rendered {i}/{len(jobs)} in {time.monotonic() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    with (out / "train.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary: dict[str, object] = {
        "utterances": len(rows),
        "hours": round(sum(r["duration"] for r in rows) / 3600, 2),
        "voices": len({r["voice"] for r in rows}),
        "engines": sorted({str(r["source"]) for r in rows}),
        "telephone": sum(r["channel"]["codec"] is not None for r in rows),
        "seconds": round(time.monotonic() - started),
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    from kubescribe_modeling.dataset import read_manifest
    from kubescribe_modeling.evaluate import manifest_path

    p = argparse.ArgumentParser(prog="python -m kubescribe_modeling.data.realvoices")
    p.add_argument("--language", required=True, choices=sorted(_ESPEAK_LANGUAGES))
    p.add_argument("--utterances", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--held",
        type=Path,
        action="append",
        default=[],
        help="test set whose sentences training must not say (repeatable)",
    )
    p.add_argument("--telephone", type=float, default=0.8, help="share of narrowband clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args(argv)
    held = [u.text for path in args.held for u in read_manifest(manifest_path(path))]
    jobs = plan_jobs(args.language, args.utterances, held, args.seed, telephone=args.telephone)
    print(json.dumps(write_corpus(jobs, args.out, args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
