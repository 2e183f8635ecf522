"""End to end over HTTP: a real `kubescribe serve` process on loopback, closed-loop clients.

    .venv/bin/python -m bench.server            # full run (about 6 minutes), updates the doc
    .venv/bin/python -m bench.server --smoke    # seconds: checks that it runs
    .venv/bin/python -m bench.server --baseline-ref REF   # also the server of commit REF
    .venv/bin/python -m bench.server --cpu      # CPU settings before/after (bench.cpu_settings)


For each mode (dynamic batching on: ``--max-batch-size 16 --max-delay-ms 10``; off:
``--max-batch-size 1``), one server process is started on 127.0.0.1 and warmed up; then
1, 4, 16 and 64 concurrent clients each send clips back to back (``POST
/v1/audio/transcriptions``, a 5 s or a 20 s WAV cut from the committed test set) until the cell
has sent its bounded number of requests or its time is up. Throughput is audio seconds
transcribed per wall-clock second; latency is per request, as the client sees it.
Everything stays on loopback; the server is stopped (SIGTERM) at the end, whatever happens.

``--baseline-ref`` adds one more "batching on" server: the runtime of an earlier commit,
extracted with ``git archive`` into a temporary directory and run from there (its packages must
be installed in this environment, e.g. waitress for the commits before the gunicorn switch), so
that one run compares two servers on the same machine, load and clips: both are up together,
and each cell runs on the baseline right after this tree's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import (
    REPO,
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
    ratio,
    read_testset,
    require_artifact,
    wav_bytes,
)

SECTION = "server"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Settings:
    clients: tuple[int, ...]
    clip_seconds: tuple[float, ...]
    cell_seconds: float  # stop starting requests after this long
    min_requests: int  # a cell sends at most max(min_requests, per_client * clients)
    per_client: int
    batch_size: int
    max_delay_ms: float


FULL = Settings((1, 4, 16, 64), (5.0, 20.0), 10.0, 32, 6, 16, 10.0)
SMOKE = Settings((1, 2), (2.0,), 5.0, 2, 1, 2, 10.0)

# The runtime closes a batch at once when no other request is preparing audio; the full-delay
# mode (`--batch-wait-full-delay`) always waits `--max-delay-ms`, as the batcher used to.
FULL_DELAY = "batching on, full delay"
MODES = ("batching on", FULL_DELAY, "batching off")


@dataclass
class Cell:
    clients: int
    clip_s: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        """Audio seconds per second."""
        return len(self.latencies) * self.clip_s / self.elapsed if self.elapsed else 0.0


# ---- the server process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`kubescribe serve` on a free loopback port; a context manager that always stops it."""

    def __init__(
        self,
        artifact: Path,
        threads: int,
        batch: int,
        delay_ms: float,
        log: Path,
        extra: Sequence[str] = (),
        tree: Path = REPO,
    ):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log
        self.command = [
            sys.executable, "-m", "kubescribe.cli", "serve",
            "--model-dir", str(artifact), "--host", HOST, "--port", str(self.port),
            "--threads", str(threads), "--max-batch-size", str(batch),
            "--max-delay-ms", str(delay_ms), "--http-threads", "80", "--max-queue", "512",
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.tree = tree
        self.process: subprocess.Popen[bytes] | None = None
        self.software = ""  # the Server header of its answers

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBESCRIBE_")}
        if self.tree != REPO:  # the other tree's packages win over the installed ones
            env["PYTHONPATH"] = os.pathsep.join(
                str(self.tree / part) for part in ("runtime", "operator", "modeling", ".")
            )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.tree, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the server exited ({self.process.returncode}): {self.tail()}")
            try:
                answer = requests.get(self.url + "/readyz", timeout=2)
                if answer.status_code == 200:
                    self.software = answer.headers.get("Server", "?")
                    return self
            except (requests.ConnectionError, requests.Timeout):  # up, still importing
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise BenchError(f"the server did not become ready in 120 s: {self.tail()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


# ---- the clients --------------------------------------------------------------------------


def transcribe(session: requests.Session, url: str, wav: bytes) -> str | None:
    """One request; ``None`` when it succeeded, else a short error label."""
    try:
        response = session.post(
            url + "/v1/audio/transcriptions",
            files={"file": ("clip.wav", wav, "audio/wav")},
            data={"model": "default", "response_format": "json"},
            timeout=300,
        )
    except requests.RequestException as exc:
        return type(exc).__name__
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return None


def run_cell(url: str, wav: bytes, clip_s: float, clients: int, settings: Settings) -> Cell:
    cell = Cell(clients, clip_s)
    budget = max(settings.min_requests, settings.per_client * clients)
    lock = threading.Lock()
    issued = 0
    started = time.perf_counter()
    deadline = started + settings.cell_seconds
    last_done = started

    def client() -> None:
        nonlocal issued, last_done
        with requests.Session() as session:
            while True:
                with lock:
                    if issued >= budget or time.perf_counter() >= deadline:
                        return
                    issued += 1
                t0 = time.perf_counter()
                error = transcribe(session, url, wav)
                t1 = time.perf_counter()
                with lock:
                    last_done = max(last_done, t1)
                    if error is None:
                        cell.latencies.append(t1 - t0)
                    else:
                        cell.errors[error] = cell.errors.get(error, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cell.elapsed = last_done - started
    return cell


def warm_up(url: str, wav: bytes, clients: int) -> None:
    """A few concurrent requests (thread pools, allocations) before anything is timed."""
    with requests.Session() as session:
        if transcribe(session, url, wav) is not None:
            raise BenchError(f"{url}: the warm-up request failed")
    threads = [
        threading.Thread(target=transcribe, args=(requests.Session(), url, wav), daemon=True)
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ---- the run ------------------------------------------------------------------------------


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "server benchmark")
    add_artifact_options(parser)
    parser.add_argument(
        "--baseline-ref",
        help="also run the server of this git commit (batching on), for a comparison",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="instead: the CPU settings before and after (threads from the quota, spinning)",
    )
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact).resolve()
    utterances = read_testset()
    if args.cpu:
        from bench.cpu_settings import CLIP_S, run_cpu

        (clip,) = build_clips(utterances, 1, CLIP_S)
        return run_cpu(args, settings, artifact, wav_bytes(clip.samples))
    wavs = {}
    limits: dict[tuple[float, int], float] = {}
    for seconds in settings.clip_seconds:
        (clip,) = build_clips(utterances, 1, seconds)
        wavs[seconds] = wav_bytes(clip.samples)
        for batch in (1, settings.batch_size):
            limits[seconds, batch] = model_limit(artifact, args.threads, clip, batch)
            progress(
                f"model only, {seconds:g} s clips, batch {batch}: "
                f"{limits[seconds, batch]:.1f} audio s/s"
            )
    results: dict[str, list[Cell]] = {}
    software: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        baseline = (
            extract_tree(args.baseline_ref, Path(tmp) / "baseline") if args.baseline_ref else None
        )
        for mode in MODES:
            batch = 1 if mode == "batching off" else settings.batch_size
            extra = ["--batch-wait-full-delay"] if mode == FULL_DELAY else []
            flags = " ".join([f"--max-batch-size {batch}", *extra])
            progress(f"{mode}: starting `kubescribe serve {flags}`")

            def start(tree: Path, flags: list[str], name: str, batch: int = batch) -> ServerProcess:
                log = Path(tmp) / f"server-{name}.log"
                return ServerProcess(
                    artifact, args.threads, batch, settings.max_delay_ms, log, flags, tree
                )

            # 64 closed-loop clients are all admitted here (bench.load measures refusals).
            with contextlib.ExitStack() as servers:
                servers.enter_context(srv := start(REPO, [*extra, "--max-requests", "256"], mode))
                runs = {mode: srv}
                if baseline is not None and mode == "batching on":
                    # The baseline runs each cell right after this tree's: the two see the
                    # same load from the rest of the machine.
                    base = start(baseline, extra, "baseline")
                    runs[baseline_mode(args.baseline_ref)] = servers.enter_context(base)
                for name, server in runs.items():
                    software[name] = server.software
                    warm_up(
                        server.url, wavs[settings.clip_seconds[0]], min(8, max(settings.clients))
                    )
                    results[name] = []
                for clip_s in settings.clip_seconds:
                    for clients in settings.clients:
                        for name, server in runs.items():
                            cell = run_cell(server.url, wavs[clip_s], clip_s, clients, settings)
                            results[name].append(cell)
                            progress(
                                f"{name}: {clients:>2} clients × {clip_s:g} s clips: "
                                f"{len(cell.latencies)} ok, {sum(cell.errors.values())} failed, "
                                f"{cell.throughput:.1f} audio s/s"
                            )
    finish(
        args,
        SECTION,
        "Server over HTTP (`python -m bench.server`)",
        render(args, settings, results, limits, software),
    )
    return 0


def baseline_mode(ref: str) -> str:
    return f"batching on, server of {ref}"


def extract_tree(ref: str, dest: Path) -> Path:
    """The files of commit ``ref`` in ``dest`` (``git archive``: no worktree, no checkout)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=REPO, capture_output=True, check=False
    )
    if archive.returncode:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def _lat(cell: Cell, q: float) -> str:
    return fmt(percentile(cell.latencies, q), 2) if cell.latencies else "—"


def target_lines(results: dict[str, list[Cell]]) -> list[str]:
    """At 16 clients: batching on ≥ 3× off, and p99 ≤ 3× p50 with batching on."""
    lines = []
    for on, off in zip(results["batching on"], results["batching off"], strict=True):
        if on.clients != 16 or not on.latencies or not off.throughput:
            continue
        gain = on.throughput / off.throughput
        spread = percentile(on.latencies, 99) / percentile(on.latencies, 50)
        gain_text = (
            f"{gain:.2f}× ≥ 3× (met)"
            if gain >= 3
            else f"**{gain:.2f}× < 3×: missed by {100 * (1 - gain / 3):.0f} %**"
        )
        spread_text = (
            f"{spread:.2f}× ≤ 3× (met)" if spread <= 3 else f"**{spread:.2f}× > 3× (missed)**"
        )
        lines.append(
            f"- {on.clip_s:g} s clips, 16 clients: throughput batching on / off {gain_text}; "
            f"p99 / p50 with batching on {spread_text}"
        )
    return lines or ["- 16 clients not run (smoke): no target checked"]


def compare_servers(
    args: argparse.Namespace, results: dict[str, list[Cell]], software: dict[str, str]
) -> list[str]:
    """This server against the baseline commit's, both with batching on, cell by cell."""
    if not args.baseline_ref:
        return []
    base = baseline_mode(args.baseline_ref)
    rows = [
        [
            f"{new.clip_s:g} s",
            new.clients,
            fmt(new.throughput),
            fmt(old.throughput),
            ratio(new.throughput, old.throughput) if old.throughput else "—",
            _lat(new, 50) + " / " + _lat(old, 50),
            _lat(new, 95) + " / " + _lat(old, 95),
            f"{sum(new.errors.values())} / {sum(old.errors.values())}",
        ]
        for new, old in zip(results["batching on"], results[base], strict=True)
    ]
    return [
        f"Servers compared in this run, batching on: this tree (`Server: "
        f"{software['batching on']}`) against commit `{args.baseline_ref}` (`Server: "
        f"{software[base]}`), same flags, clips and clients; both servers up together, each "
        "cell run on the baseline right after this tree's (the same load from the machine).",
        markdown_table(
            [
                "clip",
                "clients",
                "this (audio s/s)",
                "baseline (audio s/s)",
                "this / baseline",
                "p50 s this / baseline",
                "p95 s this / baseline",
                "failed this / baseline",
            ],
            rows,
        ),
    ]


def model_limit(artifact: Path, threads: int, clip: Clip, batch: int) -> float:
    """Audio s/s of onnxruntime alone on precomputed features of ``batch`` copies of ``clip``
    (best of 3): what no server can beat at that batch size."""
    from bench.pipeline import measure, model_only_engine

    engine = model_only_engine(artifact, threads, [clip] * batch, batch)
    engine.run(list(range(batch)))  # warm-up
    best = min(measure(engine, batch, batch)[0] for _ in range(3))
    return batch * clip.seconds / best


def render(
    args: argparse.Namespace,
    settings: Settings,
    results: dict[str, list[Cell]],
    limits: dict[tuple[float, int], float],
    software: dict[str, str],
) -> str:
    header = [
        "clip", "clients", "mode", "requests ok", "failed", "audio s/s", "req/s",
        "p50 s", "p95 s", "p99 s", "p99 / p50",
    ]  # fmt: skip
    rows = []
    triples = list(
        zip(results["batching on"], results[FULL_DELAY], results["batching off"], strict=True)
    )
    for on, full, off in triples:
        for mode, cell in (("on", on), ("on, full delay", full), ("off", off)):
            errors = ", ".join(f"{k}: {v}" for k, v in cell.errors.items()) or "0"
            p50 = percentile(cell.latencies, 50) if cell.latencies else 0.0
            rows.append(
                [
                    f"{cell.clip_s:g} s",
                    cell.clients,
                    mode,
                    len(cell.latencies),
                    errors,
                    fmt(cell.throughput),
                    fmt(len(cell.latencies) / cell.elapsed, 2) if cell.elapsed else "—",
                    _lat(cell, 50),
                    _lat(cell, 95),
                    _lat(cell, 99),
                    ratio(percentile(cell.latencies, 99), p50) if p50 else "—",
                ]
            )
    speedups = [
        [
            f"{on.clip_s:g} s",
            on.clients,
            fmt(on.throughput),
            fmt(full.throughput),
            fmt(off.throughput),
            ratio(on.throughput, off.throughput),
            ratio(on.throughput, full.throughput),
            _lat(on, 50) + " / " + _lat(full, 50),
            fmt(limits[on.clip_s, settings.batch_size]),
            ratio(limits[on.clip_s, settings.batch_size], off.throughput),
        ]
        for on, full, off in triples
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    targets = target_lines(results)
    return "\n\n".join(
        [
            f"Run: {mode}; artifact {artifact_label(args.artifact)}; server flags "
            f"`--threads {args.threads} --http-threads 80 --max-queue 512` (and "
            "`--max-requests 256`: every client is admitted; `bench.load` covers refusals); "
            "batching on = "
            f"`--max-batch-size {settings.batch_size} --max-delay-ms "
            f"{settings.max_delay_ms:g}` (a batch closes at once when no other request is "
            "preparing audio), on, full delay = the same plus `--batch-wait-full-delay` (always "
            f"waits the {settings.max_delay_ms:g} ms), off = `--max-batch-size 1`. Each cell: "
            f"closed-loop clients, at most max({settings.min_requests}, "
            f"{settings.per_client} × clients) requests or {settings.cell_seconds:g} s of "
            "starting new ones; latency as the client sees it.",
            "\n".join(
                machine_facts(
                    args.threads,
                    ("onnxruntime", "gunicorn", "requests")
                    + (("waitress",) if args.baseline_ref else ()),
                )
            ),
            markdown_table(header, rows),
            "Dynamic batching, throughput on vs off. *Model only* is onnxruntime alone on "
            f"precomputed features of {settings.batch_size} such clips (same threads), measured "
            "in this run before the servers started: no server can beat it, so *model only / "
            "off* is the most batching could gain here. Model only at batch 1 vs batch "
            f"{settings.batch_size}: "
            + "; ".join(
                f"{c:g} s clips {fmt(limits[c, 1])} vs {fmt(limits[c, settings.batch_size])} "
                "audio s/s"
                for c in settings.clip_seconds
            )
            + ".",
            markdown_table(
                [
                    "clip",
                    "clients",
                    "on (audio s/s)",
                    "on, full delay (audio s/s)",
                    "off (audio s/s)",
                    "on / off",
                    "on / full delay",
                    "p50 s on / full delay",
                    f"model only, batch {settings.batch_size} (audio s/s)",
                    "ceiling of on / off",
                ],
                speedups,
            ),
            "Targets:",
            "\n".join(targets),
            *compare_servers(args, results, software),
            "sherpa-onnx's offline websocket server was not run: it is a C++ program that the "
            "sherpa-onnx Python wheel (2.0.1) does not ship (its only command is "
            "`sherpa-onnx-cli text2token`), and nothing here may build or download it.",
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
