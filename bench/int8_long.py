"""int8 vs fp32 (speed and WER on the committed test set), and long audio (1 hour): real-time
factor, word error rate and peak memory of the process.

    .venv/bin/python -m bench.int8_long            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.int8_long --smoke    # seconds: checks that it runs

int8 vs fp32: the runtime's pipeline (``Transcriber``, batch 1 as `kubescribe transcribe`)
over every clip of ``examples/testset`` with ``model.onnx`` and with ``model.int8.onnx``,
interleaved, best of a few rounds; WER with the test set's normalisation.

Long audio: utterances of the test set concatenated (0.3 s apart) into a 1-minute and a 1-hour
16-bit WAV; each is transcribed by a fresh `kubescribe transcribe` process (the real CLI:
windows of 20 s with 2 s overlap, stitched). Its peak resident memory is the child's
``ru_maxrss`` read by a fresh intermediate process (so that no other child can be the maximum).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    REPO,
    BenchError,
    Utterance,
    add_artifact_options,
    artifact_label,
    base_parser,
    build_clips,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
    ratio,
    read_testset,
    require_artifact,
    timed,
    wav_bytes,
    word_error_rate,
)

if TYPE_CHECKING:
    from kubescribe_runtime.transcriber import Transcriber

SECTION = "int8-long"
MODEL_FILES = ("model.onnx", "model.int8.onnx")


@dataclass(frozen=True)
class Settings:
    testset_clips: int | None  # None: all of them
    repeats: int
    long_seconds: tuple[float, ...]


FULL = Settings(None, 3, (60.0, 600.0, 3600.0))
SMOKE = Settings(3, 1, (30.0,))


# ---- int8 vs fp32 -------------------------------------------------------------------------


@dataclass
class FileResult:
    model_file: str
    size_mb: float
    best_s: float = float("inf")
    wer: float = 0.0


def transcriber_for(artifact: Path, model_file: str, threads: int) -> Transcriber:
    from kubescribe_runtime.config import ServeConfig
    from kubescribe_runtime.service import build_transcriber

    config = ServeConfig.model_validate(
        {"model_dir": artifact, "model_file": model_file, "threads": threads, "max_batch_size": 1}
    )
    transcriber = build_transcriber(config)
    transcriber.warm_up()
    return transcriber


def _transcribe_all(transcriber: Transcriber, data: Sequence[bytes]) -> list[str]:
    return [transcriber.transcribe(d).text for d in data]


def compare_int8(
    artifact: Path, threads: int, utterances: Sequence[Utterance], repeats: int
) -> list[FileResult]:
    present = [f for f in MODEL_FILES if (artifact / f).is_file()]
    data = [u.audio.read_bytes() for u in utterances]
    refs = [u.text for u in utterances]
    transcribers = {f: transcriber_for(artifact, f, threads) for f in present}
    results = {f: FileResult(f, (artifact / f).stat().st_size / 1e6) for f in present}
    try:
        for round_ in range(repeats):
            for model_file, transcriber in transcribers.items():
                hyps, elapsed = timed(partial(_transcribe_all, transcriber, data))
                result = results[model_file]
                result.best_s = min(result.best_s, elapsed)
                result.wer = word_error_rate(refs, hyps)
                progress(
                    f"round {round_ + 1}/{repeats} {model_file:<16} {elapsed:6.2f} s, "
                    f"WER {100 * result.wer:.2f} %"
                )
    finally:
        for transcriber in transcribers.values():
            transcriber.batcher.close(timeout=5)
    return [results[f] for f in present]


# ---- long audio ---------------------------------------------------------------------------

# Runs `kubescribe transcribe` as its only child and reports that child's peak RSS (KiB).
_MEASURE = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
elapsed = time.perf_counter() - t0
print(json.dumps({"rc": out.returncode, "seconds": elapsed, "stdout": out.stdout,
                  "stderr": out.stderr[-2000:],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


@dataclass
class LongResult:
    audio_s: float
    file_mb: float
    seconds: float
    peak_rss_mb: float
    wer: float


def transcribe_long(artifact: Path, threads: int, wav: Path) -> tuple[str, float, float]:
    """(transcript, wall seconds, peak RSS in MB) of one `kubescribe transcribe` process."""
    command = [
        sys.executable, "-c", _MEASURE,
        sys.executable, "-m", "kubescribe.cli", "transcribe",
        "--model-dir", str(artifact), "--threads", str(threads), str(wav),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1800)
    if out.returncode != 0:
        raise BenchError(f"the measuring process failed: {out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    if report["rc"] != 0:
        raise BenchError(f"kubescribe transcribe failed ({report['rc']}): {report['stderr']}")
    return report["stdout"].strip(), report["seconds"], report["maxrss_kib"] / 1024


def long_audio(
    artifact: Path, threads: int, utterances: Sequence[Utterance], seconds: float, tmp: Path
) -> LongResult:
    progress(f"building {seconds:g} s of audio by concatenation")
    (clip,) = build_clips(utterances, 1, seconds, exact=False)
    wav = tmp / f"long-{int(seconds)}.wav"
    wav.write_bytes(wav_bytes(clip.samples))
    progress(f"transcribing {clip.seconds:.0f} s with `kubescribe transcribe`")
    text, elapsed, rss = transcribe_long(artifact, threads, wav)
    result = LongResult(
        audio_s=clip.seconds,
        file_mb=wav.stat().st_size / 1e6,
        seconds=elapsed,
        peak_rss_mb=rss,
        wer=word_error_rate([clip.text], [text]),
    )
    progress(
        f"{clip.seconds:.0f} s: {elapsed:.1f} s (RTF {elapsed / clip.seconds:.4f}), "
        f"peak RSS {rss:.0f} MB, WER {100 * result.wer:.2f} %"
    )
    wav.unlink()
    return result


# ---- the run ------------------------------------------------------------------------------


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "int8 and long audio")
    add_artifact_options(parser)
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact)
    utterances = read_testset()
    subset = utterances[: settings.testset_clips] if settings.testset_clips else utterances
    progress(f"int8 vs fp32 on {len(subset)} test-set clips")
    files = compare_int8(artifact, args.threads, subset, settings.repeats)
    longs = []
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        for seconds in settings.long_seconds:
            longs.append(long_audio(artifact, args.threads, utterances, seconds, Path(tmp)))
    audio_s = sum(u.duration for u in subset)
    body = render(args, settings, artifact, len(subset), audio_s, files, longs)
    finish(args, SECTION, "int8 vs fp32, and long audio (`python -m bench.int8_long`)", body)
    return 0


def render(
    args: argparse.Namespace,
    settings: Settings,
    artifact: Path,
    clips: int,
    audio_s: float,
    files: Sequence[FileResult],
    longs: Sequence[LongResult],
) -> str:
    fp32 = next((f for f in files if f.model_file == "model.onnx"), None)
    rows = [
        [
            f"`{f.model_file}`",
            fmt(f.size_mb),
            fmt(audio_s / f.best_s),
            fmt(f.best_s / audio_s, 4),
            ratio(fp32.best_s, f.best_s) if fp32 else "n/a",
            f"{100 * f.wer:.2f} %",
        ]
        for f in files
    ]
    missing = [f for f in MODEL_FILES if f not in {r.model_file for r in files}]
    long_rows = [
        [
            f"{r.audio_s / 60:.1f} min",
            fmt(r.file_mb),
            fmt(r.seconds),
            fmt(r.seconds / r.audio_s, 4),
            fmt(r.audio_s / r.seconds),
            fmt(r.peak_rss_mb, 0),
            f"{100 * r.wer:.2f} %",
        ]
        for r in longs
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    parts = [
        f"Run: {mode}; artifact {artifact_label(artifact)}.",
        "\n".join(machine_facts(args.threads, ("onnxruntime", "numpy", "soundfile", "soxr"))),
        f"int8 vs fp32: the runtime pipeline at batch 1 over {clips} test-set clips "
        f"({audio_s:.0f} s of audio), best of {settings.repeats} interleaved round(s):",
        markdown_table(
            ["model file", "size MB", "audio s/s", "RTF", "speed-up vs fp32", "WER"], rows
        ),
    ]
    if missing:
        parts.append(f"Not in the artifact, so not measured: {', '.join(missing)}.")
    parts += [
        "Long audio: one fresh `kubescribe transcribe` process per file (model load "
        "included; default flags: 20 s windows with 2 s overlap, `--max-batch-size 16`, so a "
        "long file keeps up to 16 windows in flight and fills batches by itself); peak RSS of "
        "that process, which holds the whole WAV file in memory as the server holds an upload. "
        "The WER checks the stitching of the windows against the concatenated references:",
        markdown_table(
            ["audio", "WAV MB", "wall s", "RTF", "audio s/s", "peak RSS MB", "WER"], long_rows
        ),
    ]
    return "\n\n".join(parts)


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
