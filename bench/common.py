"""What every benchmark shares: paths, command line, progress, machine facts, the document's
sections, test-set clips built by concatenation, timing, and a random-weight artifact builder.

Pure helpers (section replacement, clip planning, statistics, table rendering) are separate
from the I/O that uses them, so that ``tests/bench`` can check them without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
DEMO_ARTIFACT = REPO / "examples" / "models" / "demo"
TESTSET = REPO / "examples" / "testset"
SAMPLE_RATE = 16000

FloatArray = npt.NDArray[np.float32]
T = TypeVar("T")

_STARTED = time.perf_counter()


class BenchError(Exception):
    """A benchmark cannot run as asked (missing artifact, bad option): one line, exit 2."""


# ---- command line and progress ------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes (seconds): checks that it runs"
    )
    parser.add_argument(
        "--doc", type=Path, default=DOC, help=f"document to update (default: {DOC})"
    )
    parser.add_argument(
        "--no-doc", action="store_true", help="print the table only, write no document"
    )
    return parser


def add_artifact_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact",
        type=Path,
        default=DEMO_ARTIFACT,
        help=f"model artifact directory (default: {DEMO_ARTIFACT.relative_to(REPO)})",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="intra-op threads given to every engine alike (default: 2)",
    )


def progress(message: str) -> None:
    """One progress line on stderr, with the seconds since the start."""
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def main_wrapper(run: Callable[[Sequence[str] | None], int]) -> Callable[[], int]:
    """Map :class:`BenchError` to one line on stderr and exit status 2."""

    def main() -> int:
        try:
            return run(None)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return main


def require_artifact(path: Path) -> Path:
    if not (path / "kubescribe.yaml").is_file() or not (path / "model.onnx").is_file():
        raise BenchError(
            f"{path}: not a model artifact (no kubescribe.yaml / model.onnx); "
            "pass --artifact DIR or export one with `kubescribe export`"
        )
    return path


def artifact_label(path: Path) -> str:
    """``path`` (relative to the repository when inside it) with the manifest's name and
    version, e.g. ``examples/models/demo`` (kubescribe-demo-en 1.0.0)."""
    import yaml

    shown = path.resolve()
    with_name = str(shown.relative_to(REPO)) if shown.is_relative_to(REPO) else str(shown)
    try:
        manifest = yaml.safe_load((path / "kubescribe.yaml").read_text(encoding="utf-8"))
        what = f" ({manifest['name']} {manifest['version']})"
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        what = ""
    return f"`{with_name}`{what}"


# ---- machine facts ------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_facts(
    threads: int | None, packages: Sequence[str] = ("onnxruntime", "numpy")
) -> list[str]:
    """Markdown bullet lines: date, CPU, cores, threads, load, versions, commit."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = ", ".join(f"{p} {_version(p)}" for p in packages)
    lines = [
        f"- date: {now}; commit `{_git_commit()}`",
        f"- CPU: {_cpu_model()}; {os.cpu_count()} logical CPUs, {usable} usable; "
        f"load average at the end {load}",
        f"- Python {platform.python_version()}; {versions}",
    ]
    if threads is not None:
        lines.append(f"- threads per engine: {threads}")
    return lines


# ---- the document -------------------------------------------------------------------------


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the section ``name`` replaced by ``body`` (appended when absent).

    Everything outside the markers is left exactly as it was.
    """
    start, end = section_markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    separator = (
        "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    )
    return f"{text}{separator}{block}\n"


def write_section(doc: Path, name: str, body: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(replace_section(text, name, body), encoding="utf-8")
    progress(f"wrote section '{name}' of {doc}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def finish(args: argparse.Namespace, name: str, title: str, body: str) -> None:
    """Print the section and write it into the document (unless ``--no-doc``)."""
    text = f"## {title}\n\n{body.strip()}\n"
    print(text, flush=True)
    if not args.no_doc:
        write_section(args.doc, name, text)


# ---- test set and clips -------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str
    source: str
    duration: float


def read_testset(root: Path = TESTSET) -> list[Utterance]:
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise BenchError(f"{root}: no manifest.jsonl")
    result = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            result.append(
                Utterance(
                    root / entry["audio"],
                    entry["text"],
                    entry.get("source", ""),
                    float(entry["duration"]),
                )
            )
    if not result:
        raise BenchError(f"{root}: the test set is empty")
    return result


def read_audio(path: Path) -> FloatArray:
    """Mono float32 at 16 kHz (the committed test set's format)."""
    import soundfile as sf

    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise BenchError(f"{path}: {rate} Hz; the benchmarks expect {SAMPLE_RATE} Hz")
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))


def plan_clips(
    durations: Sequence[float], count: int, seconds: float, gap_s: float
) -> list[list[int]]:
    """Indices of the utterances each of ``count`` clips concatenates, cycling through the set
    (every clip starts where the previous one stopped) until a clip holds ``seconds``."""
    if not durations:
        raise BenchError("no utterances to build clips from")
    plan: list[list[int]] = []
    cursor = 0
    for _ in range(count):
        used: list[int] = []
        total = 0.0
        while total < seconds:
            used.append(cursor % len(durations))
            total += durations[cursor % len(durations)] + gap_s
            cursor += 1
        plan.append(used)
    return plan


@dataclass(frozen=True)
class Clip:
    samples: FloatArray
    text: str  # the reference of the utterances wholly inside the clip

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def build_clips(
    utterances: Sequence[Utterance],
    count: int,
    seconds: float,
    gap_s: float = 0.3,
    exact: bool = True,
) -> list[Clip]:
    """``count`` clips of ``seconds`` each, concatenated from the test set with ``gap_s`` of
    silence between utterances. ``exact`` cuts each clip to ``seconds`` (the last word may be
    cut); otherwise a clip ends after its last whole utterance (at least ``seconds``)."""
    cache: dict[int, FloatArray] = {}
    gap = np.zeros(int(gap_s * SAMPLE_RATE), dtype=np.float32)
    clips = []
    for indices in plan_clips([u.duration for u in utterances], count, seconds, gap_s):
        parts: list[FloatArray] = []
        texts: list[str] = []
        length = 0
        limit = int(seconds * SAMPLE_RATE)
        for i in indices:
            if i not in cache:
                cache[i] = read_audio(utterances[i].audio)
            parts += [cache[i], gap]
            if not exact or length + len(cache[i]) <= limit:
                texts.append(utterances[i].text)
            length += len(cache[i]) + len(gap)
        samples = np.concatenate(parts)
        if exact:
            samples = samples[:limit]
        clips.append(Clip(np.ascontiguousarray(samples), " ".join(texts)))
    return clips


def wav_bytes(samples: FloatArray) -> bytes:
    """16-bit PCM WAV (what every engine reads)."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


# ---- timing and statistics ----------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×" if reference > 0 else "n/a"


# ---- word error rate ----------------------------------------------------------------------


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER after the test set's text normalisation (the modeling toolkit's)."""
    from kubescribe_modeling.decode import word_error_rate as wer
    from kubescribe_modeling.text import normalize_text

    return wer([normalize_text(r) for r in references], [normalize_text(h) for h in hypotheses])


# ---- artifacts with random weights (no training, no download) -----------------------------


def build_random_artifact(out_dir: Path, model: Mapping[str, object], seed: int = 0) -> int:
    """Export a randomly initialised Conformer-CTC (character vocabulary) with the modeling
    toolkit into ``out_dir``; returns its parameter count. Needs torch (modeling extra)."""
    import torch
    from kubescribe_modeling.artifact import export_checkpoint
    from kubescribe_modeling.checkpoint import Checkpoint, VocabSpec
    from kubescribe_modeling.config import ModelConfig
    from kubescribe_modeling.model import ConformerCTC, count_parameters
    from kubescribe_modeling.vocab import CHAR_TOKENS

    torch.manual_seed(seed)
    config = ModelConfig.model_validate(model)
    network = ConformerCTC(config, len(CHAR_TOKENS))
    checkpoint = Checkpoint(config, VocabSpec("char", list(CHAR_TOKENS)), network.state_dict())
    export_checkpoint(checkpoint, out_dir, name="random-conformer-ctc", version="0.0.0", int8=True)
    return count_parameters(network)
