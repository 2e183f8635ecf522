"""Real recorded speech: Debian's Asterisk core sound prompts as test and dev sets.

Debian ships Asterisk's IVR prompts, recorded by a professional voice (Allison Smith, 8 kHz
mono, the call-centre domain), with their transcripts:

* audio: ``asterisk-core-sounds-{en,es}-wav`` under ``/usr/share/asterisk/sounds/<voice>/``;
* text: ``asterisk-core-sounds-{en,es}`` in ``/usr/share/doc/…/core-sounds-<lang>.txt.gz``,
  one ``name: transcript`` line per prompt.

Licence: CC-BY-SA-3.0 (Digium, Inc.; see each package's ``copyright``). Install the packages
with ``make tools``; the audio is never committed.

Which prompts count (the rules are here and in tests/modeling/test_asterisk.py):

* the bracketed, parenthesised and angle-bracketed notes are dropped (``[beep]``,
  ``(10 seconds of silence)``); a prompt left with no words is not speech and is skipped;
* a prompt whose text holds ``*``, ``#``, quotes or a number of three or more digits is
  skipped: how it was read out ("pound" or "hash", "twelve thirty four" or "one two three
  four") cannot be told from the text;
* a prompt name listed twice in the transcript file is skipped (the file contradicts itself).

The dev/test split goes by the prompt's normalised text: a hash of it picks the split, so the
same sentence under two names never lands on both sides, and model selection on the dev split
never sees a test prompt.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kubescribe_modeling.errors import ModelingError
from kubescribe_modeling.text_lang import normalizer

__all__ = [
    "DEV_SHARE",
    "LANGUAGES",
    "Prompt",
    "build_testset",
    "load_prompts",
    "parse_transcripts",
    "speech_text",
    "split_of",
]

Split = Literal["dev", "test"]

#: Language -> (audio package, transcript package, voice folder under the sounds root).
LANGUAGES: dict[str, tuple[str, str, str]] = {
    "en": ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en", "en_US_f_Allison"),
    "es": ("asterisk-core-sounds-es-wav", "asterisk-core-sounds-es", "es_MX_f_Allison"),
}
SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
DOC_ROOT = Path("/usr/share/doc")
LICENSE = "CC-BY-SA-3.0"
#: Share of distinct sentences in the dev split (the rest is test).
DEV_SHARE = 0.3

_NOTES = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_AMBIGUOUS = re.compile(r"[*#\"“”]|\d{3,}")


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str  # as written in the transcript file, notes dropped
    audio: Path
    split: Split


def parse_transcripts(text: str) -> list[tuple[str, str]]:
    """``name: transcript`` lines (``;`` comments and blank lines skipped), in file order."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        name, sep, transcript = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            rows.append((name.strip(), transcript.strip()))
    return rows


def speech_text(raw: str) -> str | None:
    """The words a prompt says, or ``None`` where it says none or its reading is ambiguous."""
    if _AMBIGUOUS.search(raw):
        return None
    text = " ".join(_NOTES.sub(" ", raw).split())
    return text if any(c.isalpha() for c in text) else None


def split_of(normalized: str) -> Split:
    """``dev`` or ``test`` from a hash of the normalised sentence (stable across releases)."""
    digest = hashlib.sha256(normalized.encode("utf-8")).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < DEV_SHARE else "test"


def transcript_file(language: str, doc_root: Path = DOC_ROOT) -> Path:
    _, text_pkg, _ = _packages(language)
    return doc_root / text_pkg / f"core-sounds-{language}.txt.gz"


def _packages(language: str) -> tuple[str, str, str]:
    try:
        return LANGUAGES[language]
    except KeyError:
        raise ModelingError(
            f"no Asterisk prompts for language {language!r} (known: {', '.join(LANGUAGES)})"
        ) from None


def select_prompts(
    rows: Sequence[tuple[str, str]],
    audio_dir: Path,
    normalize: Callable[[str], str],
) -> tuple[list[Prompt], Counter[str]]:
    """Apply the rules of the module docstring; the counts say why the others were skipped."""
    names = Counter(name for name, _ in rows)
    skipped: Counter[str] = Counter()
    prompts = []
    for name, raw in rows:
        text = speech_text(raw)
        audio = audio_dir / f"{name}.wav"
        if names[name] > 1:
            skipped["name listed twice"] += 1
        elif text is None or not normalize(text):
            skipped["no words or ambiguous reading"] += 1
        elif not audio.is_file():
            skipped["no audio file"] += 1
        else:
            prompts.append(Prompt(name, text, audio, split_of(normalize(text))))
    return prompts, skipped


def load_prompts(
    language: str, sounds_root: Path = SOUNDS_ROOT, doc_root: Path = DOC_ROOT
) -> tuple[list[Prompt], Counter[str]]:
    """Every usable prompt of the installed packages for ``language``."""
    audio_pkg, text_pkg, voice = _packages(language)
    path = transcript_file(language, doc_root)
    audio_dir = sounds_root / voice
    if not path.is_file() or not audio_dir.is_dir():
        raise ModelingError(
            f"Asterisk prompts for {language!r} are not installed ({path}, {audio_dir}): "
            f"apt-get install {audio_pkg} {text_pkg} (make tools does)"
        )
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    return select_prompts(parse_transcripts(text), audio_dir, normalizer(language))


def _package_version(package: str) -> str:
    """The installed Debian version (from dpkg's status file), or ``""``."""
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return ""
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        if f"Package: {package}\n" in block + "\n":
            match = re.search(r"^Version: (.+)$", block, re.MULTILINE)
            return match.group(1) if match else ""
    return ""


def build_testset(
    language: str,
    out: Path,
    split: Split = "test",
    limit: int | None = None,
    sounds_root: Path = SOUNDS_ROOT,
    doc_root: Path = DOC_ROOT,
) -> dict[str, object]:
    """Write ``out/manifest.jsonl`` (absolute audio paths into the installed package) and
    ``out/testset.json`` (what it is: language, speech, channel, package, licence, counts)."""
    prompts, skipped = load_prompts(language, sounds_root, doc_root)
    chosen = sorted((p for p in prompts if p.split == split), key=lambda p: p.name)
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        raise ModelingError(f"no {split} prompts for {language!r}")
    out.mkdir(parents=True, exist_ok=True)
    _write_rows(
        out / "manifest.jsonl",
        (
            {
                "audio": str(p.audio),
                "text": p.text,
                "source": f"asterisk-{language}",
                "voice": LANGUAGES[language][2],
                "id": p.name,
            }
            for p in chosen
        ),
    )
    audio_pkg, text_pkg, voice = LANGUAGES[language]
    versions = {p: _package_version(p) for p in (audio_pkg, text_pkg)}
    info: dict[str, object] = {
        "name": f"{audio_pkg} {versions[audio_pkg]} ({split} split)".replace("  ", " "),
        "language": language,
        "speech": "real",
        "channel": "telephone 8 kHz",
        "voice": voice,
        "packages": versions,
        "license": LICENSE,
        "split": split,
        "utterances": len(chosen),
        "usable_prompts": len(prompts),
        "skipped": dict(sorted(skipped.items())),
        "limit": limit,
    }
    (out / "testset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _write_rows(path: Path, rows: Iterable[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_synthetic_twin(testset: Path, out: Path, voice: str = "en-gb+m5") -> dict[str, object]:
    """The same sentences as ``testset`` spoken by espeak-ng ``voice`` and carried as a call
    (8 kHz G.711 μ-law WAVs): a control that tells the voice from the text and the channel."""
    import soxr
    from kubescribe_runtime import g711

    from kubescribe_modeling.data.synth import synthesize
    from kubescribe_modeling.dataset import read_manifest
    from kubescribe_modeling.heldout import g711_wav

    info = json.loads((testset / "testset.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for i, utt in enumerate(read_manifest(testset / "manifest.jsonl")):
        wave = synthesize(utt.text, voice, 160, 50)
        phone = soxr.resample(wave, 16000, g711.SAMPLE_RATE, quality="HQ")
        name = f"{i:04d}.wav"
        (out / name).write_bytes(g711_wav(g711.from_float(phone, "pcmu"), "pcmu"))
        rows.append({"audio": name, "text": utt.text, "source": "espeak-ng", "voice": voice})
    _write_rows(out / "manifest.jsonl", rows)
    twin: dict[str, object] = {
        "name": f"{info['name']}, sentences spoken by espeak-ng {voice}",
        "language": info["language"],
        "speech": "synthetic",
        "channel": "telephone 8 kHz μ-law",
        "voice": voice,
        "utterances": len(rows),
    }
    (out / "testset.json").write_text(json.dumps(twin, indent=2, ensure_ascii=False) + "\n")
    return twin
