"""In-process pipeline throughput: WAV file → decode → features → model → CTC → text.

    .venv/bin/python -m bench.pipeline            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.pipeline --smoke    # seconds: checks that it runs

Engines, each loading the same artifact with the same intra-op thread count, on the same
clips (10 s each, concatenated from the committed test set and written as 16-bit WAV files):

- ``kubescribe``: the runtime's pieces as the server chains them (``audio.decode``,
  ``model.prepare``, ``AcousticModel.infer`` on a padded batch, ``ctc.greedy_words``);
- ``kubescribe service``: the runtime's ``Transcriber`` with its ``DynamicBatcher``
  (max batch = the batch size), fed by as many threads as the batch size: the served path;
- ``onnx-asr``: ``load_model("nemo-conformer-ctc", artifact).recognize([wav files])``;
- ``sherpa-onnx``: ``OfflineRecognizer.from_nemo_ctc``, ``decode_streams`` (WAV read with
  soundfile; its features are Kaldi-style, close to NeMo's but not identical);
- ``model only``: onnxruntime on precomputed, padded features — the limit of any pipeline.

Every engine runs each batch size ``repeats`` times, interleaved (engine by engine within a
round) so that background load hits them alike; the table keeps each one's best round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import io
import pstats
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.common import (
    Clip,
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

SECTION = "pipeline"


@dataclass(frozen=True)
class Settings:
    clips: int
    seconds: float
    batches: tuple[int, ...]
    repeats: int


FULL = Settings(clips=32, seconds=10.0, batches=(1, 8, 16, 32), repeats=3)
SMOKE = Settings(clips=2, seconds=2.0, batches=(1, 2), repeats=1)

Run = Callable[[Sequence[int]], list[str]]  # clip indices of one batch -> transcripts


@dataclass
class StageTimes:
    decode: float = 0.0
    features: float = 0.0
    model: float = 0.0
    ctc: float = 0.0

    def total(self) -> float:
        return self.decode + self.features + self.model + self.ctc


@dataclass
class Engine:
    name: str
    run: Run
    transcribes: bool = True
    close: Callable[[], None] = field(default=lambda: None)


def groups(count: int, batch: int) -> list[list[int]]:
    return [list(range(i, min(i + batch, count))) for i in range(0, count, batch)]


# ---- engines ------------------------------------------------------------------------------


def kubescribe_engine(
    artifact: Path, threads: int, paths: Sequence[Path], stages: StageTimes
) -> Engine:
    from kubescribe_runtime import audio
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.ctc import greedy_words, text_of
    from kubescribe_runtime.model import AcousticModel, prepare

    model = AcousticModel(load_artifact(artifact), threads=threads)
    manifest = model.manifest
    tokens = model.artifact.tokens

    def run(indices: Sequence[int]) -> list[str]:
        waves, t = timed(
            lambda: [
                audio.decode(paths[i].read_bytes(), manifest.sample_rate, 7200.0) for i in indices
            ]
        )
        stages.decode += t
        inputs, t = timed(lambda: [prepare(w, manifest) for w in waves])
        stages.features += t
        logprobs, t = timed(lambda: model.infer(inputs))
        stages.model += t
        texts, t = timed(
            lambda: [text_of(greedy_words(lp, tokens, model.frame_seconds)) for lp in logprobs]
        )
        stages.ctc += t
        return texts

    return Engine("kubescribe", run)


def kubescribe_service_engine(
    artifact: Path, threads: int, paths: Sequence[Path], batch: int
) -> Engine:
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.batcher import DynamicBatcher
    from kubescribe_runtime.model import AcousticModel
    from kubescribe_runtime.transcriber import PipelineSettings, Transcriber

    model = AcousticModel(load_artifact(artifact), threads=threads)
    batcher = DynamicBatcher(model.infer, max_batch_size=batch, max_delay_s=0.005, max_queue=1024)
    transcriber = Transcriber(model, batcher, PipelineSettings())
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=batch)

    def one(path: Path) -> str:
        return transcriber.transcribe(path.read_bytes()).text

    def run(indices: Sequence[int]) -> list[str]:
        return list(pool.map(one, [paths[i] for i in indices]))

    def close() -> None:
        pool.shutdown()
        batcher.close(timeout=5)

    return Engine("kubescribe service", run, close=close)


def onnx_asr_engine(artifact: Path, threads: int, paths: Sequence[Path]) -> Engine:
    import onnx_asr
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    model = onnx_asr.load_model(
        "nemo-conformer-ctc",
        str(artifact),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )

    def run(indices: Sequence[int]) -> list[str]:
        return [str(t) for t in model.recognize([str(paths[i]) for i in indices])]

    return Engine("onnx-asr", run)


def sherpa_engine(artifact: Path, threads: int, paths: Sequence[Path]) -> Engine:
    import sherpa_onnx
    import soundfile as sf

    recognizer = sherpa_onnx.OfflineRecognizer.from_nemo_ctc(
        model=str(artifact / "model.onnx"),
        tokens=str(artifact / "tokens.txt"),
        num_threads=threads,
        sample_rate=16000,
        feature_dim=80,
        decoding_method="greedy_search",
        provider="cpu",
    )

    def run(indices: Sequence[int]) -> list[str]:
        streams = []
        for i in indices:
            samples, rate = sf.read(str(paths[i]), dtype="float32")
            stream = recognizer.create_stream()
            stream.accept_waveform(rate, samples)
            streams.append(stream)
        recognizer.decode_streams(streams)
        return [str(s.result.text).strip().lower() for s in streams]

    return Engine("sherpa-onnx", run)


def model_only_engine(artifact: Path, threads: int, clips: Sequence[Clip], batch: int) -> Engine:
    import onnxruntime as ort
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.model import pad_batch, prepare

    manifest = load_artifact(artifact).manifest
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(artifact / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
    )
    inputs = [prepare(c.samples, manifest) for c in clips]
    feeds = {
        tuple(g): dict(
            zip(("audio_signal", "length"), pad_batch([inputs[i] for i in g]), strict=True)
        )
        for g in groups(len(clips), batch)
    }

    def run(indices: Sequence[int]) -> list[str]:
        session.run(["logprobs"], feeds[tuple(indices)])
        return []

    return Engine("model only", run, transcribes=False)


# ---- the measurement ----------------------------------------------------------------------


@dataclass
class Result:
    best_s: dict[str, float] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)


def measure(engine: Engine, count: int, batch: int) -> tuple[float, list[str]]:
    texts: list[str] = []

    def all_groups() -> None:
        for g in groups(count, batch):
            texts.extend(engine.run(g))

    _, elapsed = timed(all_groups)
    return elapsed, texts


def agreement(texts: Sequence[str], reference: Sequence[str]) -> str:
    """Transcripts identical to the reference's, and the word error rate between them."""
    if not texts:
        return "—"
    same = sum(a.split() == b.split() for a, b in zip(texts, reference, strict=True))
    differ = word_error_rate(reference, texts)
    return f"{same}/{len(reference)} identical, {100 * differ:.1f} % words differ"


def profile_kubescribe(engine: Engine, count: int, batch: int, top: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    measure(engine, count, batch)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start : start + top + 1])


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "pipeline benchmark")
    add_artifact_options(parser)
    parser.add_argument("--clips", type=int, help="number of clips (default 32; smoke 2)")
    parser.add_argument(
        "--batches", type=int, nargs="+", help="batch sizes (default 1 8 16 32; smoke 1 2)"
    )
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.clips is not None and args.clips < 1:
        parser.error("--clips must be at least 1")
    if args.batches:
        if min(args.batches) < 1:
            parser.error("--batches: every batch size must be at least 1")
        settings = replace(settings, batches=tuple(args.batches))
    count = args.clips or settings.clips
    artifact = require_artifact(args.artifact)

    progress(f"building {count} clips of {settings.seconds:g} s from the test set")
    clips = build_clips(read_testset(), count, settings.seconds)
    audio_s = sum(c.seconds for c in clips)
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        paths = []
        for i, clip in enumerate(clips):
            path = Path(tmp) / f"clip-{i:03d}.wav"
            path.write_bytes(wav_bytes(clip.samples))
            paths.append(path)
        results, stages, profile = benchmark(args, settings, artifact, clips, paths)
    body = render(args, settings, artifact, count, audio_s, results, stages, profile)
    finish(args, SECTION, "In-process pipeline (`python -m bench.pipeline`)", body)
    return 0


def benchmark(
    args: argparse.Namespace,
    settings: Settings,
    artifact: Path,
    clips: Sequence[Clip],
    paths: Sequence[Path],
) -> tuple[dict[int, Result], dict[int, StageTimes], str]:
    count = len(clips)
    progress(f"loading the engines ({args.threads} threads each)")
    stage_times = {b: StageTimes() for b in settings.batches}
    current = StageTimes()
    shared = [
        kubescribe_engine(artifact, args.threads, paths, current),
        onnx_asr_engine(artifact, args.threads, paths),
        sherpa_engine(artifact, args.threads, paths),
    ]
    results: dict[int, Result] = {}
    for batch in settings.batches:
        engines = [
            shared[0],
            kubescribe_service_engine(artifact, args.threads, paths, batch),
            *shared[1:],
            model_only_engine(artifact, args.threads, clips, batch),
        ]
        result = Result()
        for engine in engines:  # warm-up: one batch each (allocations, thread pools)
            engine.run(groups(count, batch)[0])
        for round_ in range(settings.repeats):
            for engine in engines:
                before = StageTimes(**vars(current))
                elapsed, texts = measure(engine, count, batch)
                progress(
                    f"batch {batch:>2} round {round_ + 1}/{settings.repeats} {engine.name:<18} "
                    f"{elapsed:7.2f} s  ({sum(c.seconds for c in clips) / elapsed:7.1f} audio s/s)"
                )
                if elapsed < result.best_s.get(engine.name, float("inf")):
                    result.best_s[engine.name] = elapsed
                    result.texts[engine.name] = texts
                    if engine.name == "kubescribe":
                        stage_times[batch] = StageTimes(
                            *(getattr(current, k) - getattr(before, k) for k in vars(current))
                        )
        for engine in engines[1:2] + engines[-1:]:
            engine.close()
        results[batch] = result
    profile_batch = 16 if 16 in settings.batches else settings.batches[-1]
    progress(f"profiling kubescribe at batch {profile_batch} (cProfile)")
    profile = profile_kubescribe(shared[0], count, profile_batch)
    return results, stage_times, profile


# ---- the section --------------------------------------------------------------------------

ENGINES = ("kubescribe", "kubescribe service", "onnx-asr", "sherpa-onnx", "model only")
PEERS = ("onnx-asr", "sherpa-onnx")


def verdict(value: float, target: float) -> str:
    """``met`` or ``missed by N %`` for a ratio ``value`` against ``target``."""
    if value >= target:
        return f"met ({value:.2f}× ≥ {target:.2f}×)"
    return f"**missed by {100 * (1 - value / target):.0f} %** ({value:.2f}× < {target:.2f}×)"


def target_lines(results: dict[int, Result], audio_s: float) -> list[str]:
    lines = []
    for batch, result in results.items():
        speed = {name: audio_s / t for name, t in result.best_s.items()}
        best_peer = max(PEERS, key=lambda p: speed[p])
        lines.append(
            f"- batch {batch}: kubescribe vs the best peer ({best_peer}): "
            f"{verdict(speed['kubescribe'] / speed[best_peer], 1.0)}"
        )
    if 16 in results:
        speed = {name: audio_s / t for name, t in results[16].best_s.items()}
        lines.append(
            "- batch 16: kubescribe vs the model-only limit: "
            f"{verdict(speed['kubescribe'] / speed['model only'], 0.8)}"
        )
    else:
        lines.append("- batch 16 not run (smoke): the 80 % of the model-only limit target")
    return lines


def render(
    args: argparse.Namespace,
    settings: Settings,
    artifact: Path,
    count: int,
    audio_s: float,
    results: dict[int, Result],
    stages: dict[int, StageTimes],
    profile: str,
) -> str:
    header = ["batch", *(f"{e} (audio s/s)" for e in ENGINES)]
    header += ["kubescribe / best peer", "kubescribe / model only"]
    rows = []
    for batch, result in results.items():
        speed = {name: audio_s / t for name, t in result.best_s.items()}
        best_peer = max(speed[p] for p in PEERS)
        rows.append(
            [
                batch,
                *(fmt(speed[e]) for e in ENGINES),
                ratio(speed["kubescribe"], best_peer),
                ratio(speed["kubescribe"], speed["model only"]),
            ]
        )
    agree_rows = [
        [batch, *(agreement(r.texts[e], r.texts["kubescribe"]) for e in ENGINES[1:4])]
        for batch, r in results.items()
    ]
    stage_rows = []
    for batch, st in stages.items():
        total = st.total() or 1.0
        stage_rows.append(
            [batch]
            + [
                f"{fmt(getattr(st, k), 2)} s ({100 * getattr(st, k) / total:.0f} %)"
                for k in ("decode", "features", "model", "ctc")
            ]
        )
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    verdicts = "\n".join(target_lines(results, audio_s))
    parts = [
        f"Run: {mode}; artifact {artifact_label(artifact)}; {count} clips of "
        f"{settings.seconds:g} s ({audio_s:.0f} s of audio) concatenated from the committed "
        "test set; best of "
        f"{settings.repeats} interleaved round(s). Higher is better; ratios are from this one "
        "run.",
        "\n".join(
            machine_facts(
                args.threads, ("onnxruntime", "numpy", "onnx-asr", "sherpa-onnx", "soundfile")
            )
        ),
        "Throughput, audio seconds per second:",
        markdown_table(header, rows),
        "Targets:",
        verdicts,
        "Transcripts compared with `kubescribe`'s, per engine (onnx-asr computes the same "
        "NeMo features; sherpa-onnx's Kaldi-style features differ slightly, which moves a few "
        "characters of a weak model's output):",
        markdown_table(["batch", *ENGINES[1:4]], agree_rows),
        "Where `kubescribe`'s time goes (its best round, per stage):",
        markdown_table(["batch", "decode", "features", "model", "CTC"], stage_rows),
        "cProfile of `kubescribe` (one pass at batch "
        f"{16 if 16 in settings.batches else settings.batches[-1]}), top entries by own time:",
        f"```\n{profile}\n```",
    ]
    return "\n\n".join(parts)


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
