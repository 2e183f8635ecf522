"""The runtime under load (issue 12): long files, short clips and hang-ups at once.

    .venv/bin/python -m bench.load            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.load --smoke    # seconds: checks that it runs
    .venv/bin/python -m bench.load --mixed    # the mixed section (bench/mixed.py)

One `kubescribe serve` process on loopback, with the runtime's admission defaults. Each *mix*
starts requests for a fixed time: ``long`` clients send long files back to back (a refused one
waits its ``Retry-After``), one client sends short clips back to back (their latency is the
point), one client starts long uploads and hangs up a second after sending them; then the mix
waits until every request it started has ended. Measured per mix:

- goodput: audio seconds of completed requests per second, over the whole mix (until the last
  admitted request completed: with fair scheduling, long files finish together at the end);
- requests refused at admission (429) against requests aborted after admission (anything else
  but a 200 or a hang-up by the client: must be 0);
- short-clip p50/p95, against the same clips alone (measured first, same server); the goal is
  ``p95 under load ≤ p95 alone + the compute time of one full batch of long windows`` (a short
  clip waits at most about one batch). That batch time is measured in the same mix, from the
  server's own counters (model seconds per input frame × a full batch's frames), so that it
  slows down with the machine as the clips do; onnxruntime alone on the same batch, measured
  before the mixes, is shown beside it;
- padding ratio: padded over real input frames of the batches (`kubescribe_batch_frames`).

Then a fresh server takes 90 concurrent 25 MB uploads (13 minutes of speech each; the client
gives each 15 s, then hangs up): the worker process's peak RSS (`VmHWM`) against the memory
limit the operator gives a pod with these settings. Everything stays on loopback; the servers
are stopped.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from bench.common import (
    BenchError,
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
    percentile,
    progress,
    read_testset,
    require_artifact,
    wav_bytes,
)
from bench.server import ServerProcess, model_limit

SECTION = "load"


@dataclass(frozen=True)
class Settings:
    long_clients: tuple[int, ...]  # one mix per entry
    long_s: float
    short_s: float
    mix_s: float  # how long each mix sends
    alone: int  # short clips measured alone
    uploads: int
    upload_mb: float
    upload_patience_s: float
    batch_size: int
    window_s: float


FULL = Settings((2, 8, 32), 60.0, 5.0, 20.0, 20, 90, 25.0, 15.0, 16, 20.0)
SMOKE = Settings((2,), 30.0, 2.0, 3.0, 2, 4, 1.0, 3.0, 4, 20.0)


@dataclass
class Mix:
    long_clients: int
    ok_audio_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)  # by client kind and result
    short: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    padding: float = 0.0
    batch_s: float = 0.0  # a full batch of long windows, at this mix's model speed

    def count(self, key: str) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def total(self, result: str) -> int:
        return sum(n for k, n in self.outcomes.items() if k.endswith(result))


# ---- clients --------------------------------------------------------------------------------


def send(
    url: str, wav: bytes, timeout: float | tuple[float, float] = 600
) -> tuple[str, float, float]:
    """(result, latency, Retry-After): result ok, refused, hung-up or aborted (with a code)."""
    started = time.perf_counter()
    try:
        answer = requests.post(
            url + "/v1/audio/transcriptions",
            files={"file": ("a.wav", wav, "audio/wav")},
            data={"model": "default"},
            timeout=timeout,
        )
    except requests.Timeout:
        return "hung-up", time.perf_counter() - started, 0.0
    except requests.RequestException as exc:
        return f"aborted ({type(exc).__name__})", time.perf_counter() - started, 0.0
    latency = time.perf_counter() - started
    if answer.status_code == 200:
        return "ok", latency, 0.0
    if answer.status_code == 429:
        return "refused", latency, float(answer.headers.get("Retry-After", "1"))
    return f"aborted (HTTP {answer.status_code})", latency, 0.0


def frames(url: str) -> tuple[float, float, float]:
    """(audio frames, padding frames, model seconds) of the server's batches so far."""
    text = requests.get(url + "/metrics", timeout=10).text
    series = {
        'kubescribe_batch_frames_total{kind="audio"}': 0.0,
        'kubescribe_batch_frames_total{kind="padding"}': 0.0,
        "kubescribe_batch_inference_seconds_sum": 0.0,
    }
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in series:
            series[name] = float(value)
    audio, padding, seconds = series.values()
    return audio, padding, seconds


def run_mix(
    url: str, long_wav: bytes, short_wav: bytes, clients: int, s: Settings, full_batch: float
) -> Mix:
    """``full_batch``: the input frames of one full batch of long windows."""
    mix = Mix(clients)
    lock = threading.Lock()
    started = time.perf_counter()
    stop = started + s.mix_s
    audio0, padding0, model0 = frames(url)

    def remaining() -> float:
        return stop - time.perf_counter()

    def long_client() -> None:
        while remaining() > 0:
            result, _, retry = send(url, long_wav, timeout=(10, 1200))
            with lock:
                mix.count(f"long {result}")
                if result == "ok":
                    mix.ok_audio_s += s.long_s
            if result == "refused":
                time.sleep(min(retry, max(0.0, remaining())))

    def short_client() -> None:
        while remaining() > 0:
            result, latency, retry = send(url, short_wav, timeout=(10, 600))
            with lock:
                mix.count(f"short {result}")
                if result == "ok":
                    mix.short.append(latency)
                    mix.ok_audio_s += s.short_s
            if result == "refused":
                time.sleep(min(retry, max(0.0, remaining())))

    def hang_up_client() -> None:
        while remaining() > 1:
            result, _, _ = send(url, long_wav, timeout=(10, 1.0))
            with lock:
                mix.count(f"hang-up {result}")

    threads = [threading.Thread(target=long_client, daemon=True) for _ in range(clients)]
    threads += [threading.Thread(target=f, daemon=True) for f in (short_client, hang_up_client)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mix.elapsed = time.perf_counter() - started
    audio1, padding1, model1 = frames(url)
    if audio1 > audio0:
        mix.padding = (padding1 - padding0) / (audio1 - audio0)
        mix.batch_s = full_batch * (model1 - model0) / (audio1 - audio0 + padding1 - padding0)
    return mix


def short_alone(url: str, wav: bytes, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        result, latency, _ = send(url, wav)
        if result != "ok":
            raise BenchError(f"a short clip alone failed: {result}")
        latencies.append(latency)
    return latencies


# ---- memory ---------------------------------------------------------------------------------


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if not children:
        raise BenchError("the server has no worker process")
    return int(children[0])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for {pid}")


def speech_wav(clip: Clip, megabytes: float) -> tuple[bytes, float]:
    """A 16-bit WAV of about ``megabytes`` MB: the clip repeated (speech all through)."""
    seconds = megabytes * 1e6 / (2 * 16000)
    samples = np.tile(clip.samples, int(seconds / clip.seconds) + 1)[: int(seconds * 16000)]
    return wav_bytes(samples), seconds


@dataclass
class Uploads:
    outcomes: dict[str, int]
    peak_rss_mib: float
    rss_before_mib: float
    seconds: float


def run_uploads(url: str, pid: int, wav: bytes, s: Settings) -> Uploads:
    before = peak_rss_mib(pid)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def upload() -> None:
        result, _, _ = send(url, wav, timeout=(30, s.upload_patience_s))
        with lock:
            outcomes[result] = outcomes.get(result, 0) + 1

    started = time.perf_counter()
    threads = [threading.Thread(target=upload, daemon=True) for _ in range(s.uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Uploads(outcomes, peak_rss_mib(pid), before, time.perf_counter() - started)


# ---- the run --------------------------------------------------------------------------------


def server_flags(s: Settings) -> list[str]:
    # Enough threads that every client is answered at once (admitted or refused), not queued.
    return ["--http-threads", "160", "--max-queue", "64", "--log-level", "warning"]


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "load benchmark")
    add_artifact_options(parser)
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="the mixed section instead: Realtime sessions, files and clips at once (bench.mixed)",
    )
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="with --mixed: also the runtime of commit REF at the default settings (git archive)",
    )
    args = parser.parse_args(argv)
    if args.mixed:
        from bench import mixed

        return mixed.run(args)
    s = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact).resolve()
    utterances = read_testset()
    (long_clip,) = build_clips(utterances, 1, s.long_s)
    (short_clip,) = build_clips(utterances, 1, s.short_s)
    (window_clip,) = build_clips(utterances, 1, s.window_s)
    from kubescribe_runtime.artifact import load_artifact
    from kubescribe_runtime.service import units_per_second

    limit = model_limit(artifact, args.threads, window_clip, s.batch_size)
    batch_s = s.batch_size * s.window_s / limit
    full_batch = s.batch_size * s.window_s * units_per_second(load_artifact(artifact).manifest)
    progress(f"one full batch of {s.batch_size} × {s.window_s:g} s windows: {batch_s:.2f} s")
    long_wav, short_wav = wav_bytes(long_clip.samples), wav_bytes(short_clip.samples)
    upload_wav, upload_s = speech_wav(short_clip, s.upload_mb)
    flags = server_flags(s)
    mixes: list[Mix] = []
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        log = Path(tmp) / "server.log"
        with ServerProcess(artifact, args.threads, s.batch_size, 10, log, flags) as srv:
            send(srv.url, short_wav)  # warm-up
            alone = short_alone(srv.url, short_wav, s.alone)
            progress(f"short clips alone: p95 {percentile(alone, 95):.2f} s")
            for clients in s.long_clients:
                mix = run_mix(srv.url, long_wav, short_wav, clients, s, full_batch)
                mixes.append(mix)
                progress(
                    f"{clients} long clients: {mix.ok_audio_s / mix.elapsed:.1f} audio s/s, "
                    f"{mix.outcomes}, short p95 "
                    f"{percentile(mix.short, 95) if mix.short else float('nan'):.2f} s"
                )
                wait_idle(srv.url)
        log = Path(tmp) / "server-uploads.log"
        with ServerProcess(artifact, args.threads, s.batch_size, 10, log, flags) as srv:
            assert srv.process is not None
            send(srv.url, short_wav)
            uploads = run_uploads(srv.url, worker_pid(srv.process.pid), upload_wav, s)
            progress(f"uploads: {uploads.outcomes}, peak RSS {uploads.peak_rss_mib:.0f} MiB")
    finish(
        args,
        SECTION,
        "Runtime under load (`python -m bench.load`)",
        render(args, s, alone, mixes, batch_s, uploads, upload_s),
    )
    return 0


def wait_idle(url: str, seconds: float = 120) -> None:
    """Until the server runs nothing (the bench hung up on what was left): the next mix starts
    from an empty pod."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = requests.get(url + "/metrics", timeout=10).text
        if "\nkubescribe_requests_in_flight 0.0" in text:
            return
        time.sleep(0.2)
    raise BenchError("the server did not become idle after a mix")


def _p(values: list[float], q: float) -> str:
    return fmt(percentile(values, q), 2) if values else "—"


def render(
    args: argparse.Namespace,
    s: Settings,
    alone: list[float],
    mixes: list[Mix],
    batch_s: float,
    uploads: Uploads,
    upload_s: float,
) -> str:
    from kubescribe_operator.runtime_budget import RuntimeSettings, memory_mib

    alone_p95 = percentile(alone, 95)
    rows = []
    for mix in mixes:
        aborted = sum(n for k, n in mix.outcomes.items() if "aborted" in k)
        under = percentile(mix.short, 95) if mix.short else float("inf")
        goal = alone_p95 + mix.batch_s
        rows.append(
            [
                mix.long_clients,
                fmt(mix.ok_audio_s / mix.elapsed),
                mix.total("ok"),
                mix.total("refused"),
                aborted,
                mix.total("hung-up"),
                _p(mix.short, 50),
                _p(mix.short, 95),
                fmt(mix.batch_s, 2),
                f"{'met' if under <= goal else '**missed**'} ({fmt(under, 2)} ≤ {fmt(goal, 2)})",
                f"{100 * mix.padding:.1f} %",
            ]
        )
    _, limit_mib = memory_mib(RuntimeSettings(max_batch_size=s.batch_size))
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    upload_rows = [
        [
            s.uploads,
            f"{s.upload_mb:g} MB ({upload_s / 60:.0f} min of speech)",
            ", ".join(f"{k}: {v}" for k, v in sorted(uploads.outcomes.items())),
            f"{uploads.rss_before_mib:.0f}",
            f"{uploads.peak_rss_mib:.0f}",
            f"{limit_mib}",
            fmt(uploads.seconds),
        ]
    ]
    return "\n\n".join(
        [
            f"Run: {mode}; artifact {artifact_label(args.artifact)}; one `kubescribe serve` "
            f"with the admission defaults (`--max-requests 32 --max-backlog-seconds 3600 "
            f"--max-queue 64`), `--max-batch-size {s.batch_size}`, `--threads {args.threads}`, "
            f"`--http-threads 160`. Each mix: for {s.mix_s:g} s, *long* clients send "
            f"{s.long_s:g} s files back to back (after a 429 they wait its Retry-After), one "
            f"client sends {s.short_s:g} s clips back to back, one starts {s.long_s:g} s "
            "uploads and hangs up after 1 s; then the mix waits for every request it started.",
            "\n".join(machine_facts(args.threads, ("onnxruntime", "gunicorn", "requests"))),
            markdown_table(
                [
                    "long clients",
                    "goodput (audio s/s)",
                    "completed",
                    "refused at admission (429)",
                    "aborted after admission",
                    "hung up by the client",
                    "short p50 s",
                    "short p95 s",
                    "full batch s (this mix)",
                    "short p95 ≤ alone + batch",
                    "padding",
                ],
                rows,
            ),
            f"Short clips alone (same server, before the mixes): p50 {_p(alone, 50)} s, p95 "
            f"{_p(alone, 95)} s. *Full batch* is the model's time for {s.batch_size} long "
            f"windows ({s.window_s:g} s) at the speed the server's batches ran during the mix "
            f"(its counters); onnxruntime alone, before the mixes, took {batch_s:.2f} s. "
            "Goodput counts completed requests only; *refused* are 429s at admission (a "
            "refused client waits its Retry-After and retries); *aborted* is any other "
            "failure after admission; *hung up* are the hang-up client's requests.",
            "Upload memory: a fresh server, concurrent uploads of speech WAVs, each given "
            f"{s.upload_patience_s:g} s before the client hangs up. Peak RSS is the worker "
            "process's `VmHWM` (the model's process); the limit is what the operator gives a "
            "pod with these settings (runtime_budget.memory_mib).",
            markdown_table(
                [
                    "uploads",
                    "size",
                    "outcomes",
                    "RSS before (MiB)",
                    "peak RSS (MiB)",
                    "operator's memory limit (MiB)",
                    "seconds",
                ],
                upload_rows,
            ),
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
