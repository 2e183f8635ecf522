"""GPU: real-time factor of onnxruntime's CUDA execution provider, where there is one.

    .venv/bin/python -m bench.gpu            # full run, updates the doc
    .venv/bin/python -m bench.gpu --smoke    # seconds: checks that it runs

Models: the demo artifact, and a randomly initialised Conformer-CTC of about 100 M parameters
(d_model 512, 16 layers, 8 heads, feed-forward 2048, kernel 31) built and exported with the
modeling toolkit (random weights: its transcripts are noise, its speed is a real model's).
For each, at batch 1, 8 and 32 on 10 s clips cut from the committed test set: features are
computed first (CPU), then the model runs on the CUDA provider; RTF = model seconds / audio
seconds, best of a few runs after warm-up.

Session options (issue 12.8), on the random model: the runtime's pipeline model
(``AcousticModel``) runs a sequence of batches whose lengths all differ, as served traffic's do,
once with onnxruntime's defaults (cuDNN's exhaustive convolution algorithm search, plain
``run``) and once with the runtime's (heuristic search, IO binding); the first pass pays for
every new shape, the second shows the steady state.

Where onnxruntime offers no CUDA provider or none initialises (no NVIDIA GPU, driver or
``onnxruntime-gpu``), the section says so and measures nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from bench.common import (
    add_artifact_options,
    artifact_label,
    base_parser,
    build_clips,
    build_random_artifact,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
    read_testset,
    require_artifact,
    timed,
)

SECTION = "gpu"
CUDA = "CUDAExecutionProvider"
LARGE_MODEL: dict[str, object] = {
    "d_model": 512,
    "n_layers": 16,
    "n_heads": 8,
    "ff_dim": 2048,
    "conv_kernel": 31,
    "subsampling_channels": 256,
}
TINY_MODEL: dict[str, object] = {"d_model": 64, "n_layers": 2, "n_heads": 2, "ff_dim": 128}


@dataclass(frozen=True)
class Settings:
    batches: tuple[int, ...]
    clip_seconds: float
    repeats: int
    large: dict[str, object]


FULL = Settings((1, 8, 32), 10.0, 5, LARGE_MODEL)
SMOKE = Settings((1, 2), 2.0, 1, TINY_MODEL)
# Session options compared on batches of 8 whose lengths all differ (seconds of audio).
SHAPE_SECONDS = (3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 12.0, 13.5, 15.0, 16.5, 18.0, 19.5)
SHAPE_BATCH = 8


@dataclass
class OptionsRow:
    variant: str
    first_s: float  # the sequence the first time: every shape new
    second_s: float  # the same sequence again


def measure_session_options(artifact: Path, threads: int, smoke: bool) -> list[OptionsRow]:
    """The runtime's session options against onnxruntime's defaults, on changing shapes."""
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.model import AcousticModel, ModelUnavailable, SessionSettings, prepare

    seconds = SHAPE_SECONDS[:3] if smoke else SHAPE_SECONDS
    batch = 2 if smoke else SHAPE_BATCH
    loaded = load_artifact(artifact)
    batches = []
    for length in seconds:
        clips = build_clips(read_testset(), batch, length)
        batches.append([prepare(c.samples, loaded.manifest) for c in clips])
    variants = {
        "onnxruntime defaults (exhaustive cuDNN search, run)": SessionSettings(
            threads=threads, cudnn_conv_algo_search="exhaustive", io_binding="off"
        ),
        "runtime defaults (heuristic cuDNN search, IO binding)": SessionSettings(threads=threads),
    }
    rows = []
    for name, options in variants.items():
        try:
            model = AcousticModel(loaded, device="gpu", session=options)
        except ModelUnavailable as exc:
            raise CudaUnavailable(str(exc)) from exc
        first, second = _one_pass(model, batches), _one_pass(model, batches)
        rows.append(OptionsRow(name, first, second))
        progress(f"{name}: first pass {first:.2f} s, second {second:.2f} s")
    return rows


def _one_pass(model: Any, batches: Sequence[Sequence[Any]]) -> float:
    total = 0.0
    for batch in batches:
        started = time.perf_counter()
        model.infer(batch)
        total += time.perf_counter() - started
    return total


def cuda_status() -> tuple[bool, str]:
    """Whether onnxruntime offers the CUDA provider, and the facts that say why (not)."""
    providers = ort.get_available_providers()
    smi = shutil.which("nvidia-smi")
    gpu = "no `nvidia-smi` on the PATH"
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            gpu = out.stdout.strip() or out.stderr.strip() or "nvidia-smi printed nothing"
        except (OSError, subprocess.SubprocessError) as exc:
            gpu = f"nvidia-smi failed: {exc}"
    facts = f"onnxruntime {ort.__version__} providers: {', '.join(providers)}; GPU: {gpu}"
    if CUDA not in providers:
        return False, facts
    return True, facts


def parameter_count(config: dict[str, object]) -> int | None:
    """Parameters of a Conformer-CTC of these sizes (on torch's meta device: no memory)."""
    try:
        import torch
        from kubescribe_modeling.config import ModelConfig
        from kubescribe_modeling.model import ConformerCTC, count_parameters
        from kubescribe_modeling.vocab import CHAR_TOKENS
    except ImportError:
        return None
    with torch.device("meta"):
        model = ConformerCTC(ModelConfig.model_validate(config), len(CHAR_TOKENS))
    return count_parameters(model)


@dataclass
class Row:
    model: str
    batch: int
    seconds: float
    audio_s: float


class CudaUnavailable(Exception):
    """The CUDA provider is listed but a session cannot use it."""


def _run_once(session: ort.InferenceSession, feed: dict[str, Any]) -> float:
    _, elapsed = timed(lambda: session.run(["logprobs"], feed))
    return elapsed


def measure_model(
    name: str, model_path: Path, artifact: Path, settings: Settings, threads: int
) -> list[Row]:
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.model import pad_batch, prepare

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        str(model_path), sess_options=options, providers=[CUDA, "CPUExecutionProvider"]
    )
    if CUDA not in session.get_providers():
        raise CudaUnavailable(
            f"the CUDA provider is listed but did not initialise (active: "
            f"{', '.join(session.get_providers())})"
        )
    manifest = load_artifact(artifact).manifest
    clips = build_clips(read_testset(), max(settings.batches), settings.clip_seconds)
    inputs = [prepare(c.samples, manifest) for c in clips]
    rows = []
    for batch in settings.batches:
        signal, lengths = pad_batch(inputs[:batch])
        feed = {"audio_signal": signal, "length": lengths}
        for _ in range(3):  # warm-up: CUDA kernels, cuDNN algorithm search, allocations
            session.run(["logprobs"], feed)
        best = min(_run_once(session, feed) for _ in range(settings.repeats))
        rows.append(Row(name, batch, best, batch * settings.clip_seconds))
        progress(f"{name} batch {batch}: {best * 1000:.1f} ms, RTF {best / rows[-1].audio_s:.5f}")
    return rows


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "GPU benchmark")
    add_artifact_options(parser)
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    available, facts = cuda_status()
    progress(f"CUDA: {'available' if available else 'not available'} ({facts})")
    rows: list[Row] = []
    options_rows: list[OptionsRow] = []
    large_params: int | None = None
    if available:
        artifact = require_artifact(args.artifact)
        try:
            rows += measure_model("demo", artifact / "model.onnx", artifact, settings, args.threads)
            with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
                progress("building and exporting the random Conformer-CTC")
                large_params = build_random_artifact(Path(tmp), settings.large)
                rows += measure_model(
                    "random", Path(tmp) / "model.onnx", Path(tmp), settings, args.threads
                )
                options_rows = measure_session_options(Path(tmp), args.threads, args.smoke)
        except CudaUnavailable as exc:
            available, facts, rows, options_rows = False, f"{facts}; {exc}", [], []
    if not available:
        large_params = parameter_count(settings.large)
    body = render(args, settings, available, facts, rows, large_params, options_rows)
    finish(args, SECTION, "GPU (`python -m bench.gpu`)", body)
    return 0


def render(
    args: argparse.Namespace,
    settings: Settings,
    available: bool,
    facts: str,
    rows: Sequence[Row],
    large_params: int | None,
    options_rows: Sequence[OptionsRow] = (),
) -> str:
    params = f"{large_params / 1e6:.1f} M parameters" if large_params else "size not computed"
    sizes = ", ".join(f"{k} {v}" for k, v in settings.large.items())
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    parts = [
        f"Run: {mode}. Models: the demo artifact ({artifact_label(args.artifact)}) and a randomly "
        f"initialised Conformer-CTC ({sizes}: {params}), exported by "
        "`kubescribe_modeling`; model only (features precomputed on the CPU), "
        f"{settings.clip_seconds:g} s clips, best of {settings.repeats} after 3 warm-up runs.",
        "\n".join(
            [*machine_facts(None, ("onnxruntime", "onnxruntime-gpu", "numpy")), f"- {facts}"]
        ),
    ]
    if not available:
        parts.append(
            "**No CUDA here: nothing was measured.** onnxruntime on this machine has no "
            f"`{CUDA}` that works (see the facts above). Run "
            "`python -m bench.gpu` on a node with an NVIDIA GPU and the `gpu` extra installed "
            "to fill this table."
        )
        return "\n\n".join(parts)
    table = [
        [
            r.model,
            r.batch,
            fmt(r.seconds * 1000, 1),
            f"{r.seconds / r.audio_s:.5f}",
            fmt(r.audio_s / r.seconds, 0),
        ]
        for r in rows
    ]
    parts.append(markdown_table(["model", "batch", "ms per batch", "RTF", "audio s/s"], table))
    if options_rows:
        parts.append(
            "Session options on the random model: batches of "
            f"{2 if args.smoke else SHAPE_BATCH} windows, "
            f"{len(SHAPE_SECONDS[:3] if args.smoke else SHAPE_SECONDS)} batch lengths that all "
            "differ (features, padding, the model and the copy back, as the runtime runs them); "
            "the first pass meets every shape for the first time."
        )
        parts.append(
            markdown_table(
                ["session options", "first pass s", "second pass s"],
                [[r.variant, fmt(r.first_s, 3), fmt(r.second_s, 3)] for r in options_rows],
            )
        )
    return "\n\n".join(parts)


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
