"""Slow clients against the server (issue 20.2): probes and a 2 s transcription while hundreds
of connections trickle one byte a second.

    .venv/bin/python -m bench.slow_clients            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.slow_clients --smoke    # seconds: checks that it runs

The same measurement on this tree's server and on a baseline commit's (``--baseline``, by
default the one before the event-driven intake): first unloaded (probes, then 2 s clips one
after another), then with ``--connections`` connections each sending one byte of a request head
per second — a connection the server closes (408) is opened again at once, as an attacker
would. Probes and clips are sent one at a time, each with a client timeout (a timed-out probe
is what the kubelet would count as a failure); after 3 timeouts in a row with no success, the
rest of that series counts as failed, unsent.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

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
    percentile,
    progress,
    read_testset,
    require_artifact,
    wav_bytes,
)
from bench.server import ServerProcess, extract_tree

SECTION = "slow-clients"
BASELINE = "7b2135c~1"  # the gthread server before the intake
HEAD_BYTES = (
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: kubescribe\r\n" + b"X-Slow: 1\r\n" * 10**4
)
GIVE_UP = 3  # timeouts in a row after which the rest of a series counts as failed, unsent


@dataclass(frozen=True)
class Settings:
    connections: int
    ramp_s: float  # trickling before measuring
    probes: int  # of each path, per condition
    clips: int
    probe_timeout_s: float
    clip_timeout_s: float


FULL = Settings(500, 15.0, 40, 10, 5.0, 30.0)
SMOKE = Settings(20, 2.0, 3, 2, 5.0, 30.0)


@dataclass
class Measured:
    probe_s: dict[str, list[float]] = field(default_factory=dict)
    probe_failed: dict[str, int] = field(default_factory=dict)
    clip_s: list[float] = field(default_factory=list)
    clip_failed: int = 0
    reconnects: int = 0


class Tricklers:
    """``n`` connections, one byte of a never-ending request head each per second."""

    def __init__(self, url: str, n: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.n = n
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Tricklers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.address, timeout=2)
        except OSError:
            return None
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        socks: list[tuple[socket.socket | None, int]] = []
        for _ in range(self.n):
            socks.append((self._connect(), 0))
        while not self._stop.wait(1.0):
            for i, (sock, sent) in enumerate(socks):
                try:
                    if sock is None:
                        raise OSError("not connected")
                    sock.send(HEAD_BYTES[sent : sent + 1])
                    socks[i] = (sock, sent + 1)
                except BlockingIOError:
                    pass
                except OSError:  # closed by the server (408) or never connected: again
                    if sock is not None:
                        sock.close()
                        self.reconnects += 1
                    socks[i] = (self._connect(), 0)
        for sock, _ in socks:
            if sock is not None:
                sock.close()


def measure(url: str, wav: bytes, s: Settings) -> Measured:
    out = Measured()
    for path in ("/healthz", "/readyz"):
        out.probe_s[path], out.probe_failed[path] = [], 0
        for i in range(s.probes):
            if out.probe_failed[path] >= GIVE_UP and out.probe_failed[path] == i:
                out.probe_failed[path] = s.probes
                break
            started = time.perf_counter()
            try:
                ok = requests.get(url + path, timeout=s.probe_timeout_s).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                out.probe_s[path].append(time.perf_counter() - started)
            else:
                out.probe_failed[path] += 1
    for i in range(s.clips):
        if out.clip_failed >= GIVE_UP and out.clip_failed == i:
            out.clip_failed = s.clips
            break
        started = time.perf_counter()
        try:
            answer = requests.post(
                url + "/v1/audio/transcriptions",
                files={"file": ("a.wav", wav, "audio/wav")},
                data={"model": "default"},
                timeout=s.clip_timeout_s,
            )
            ok = answer.status_code == 200
        except requests.RequestException:
            ok = False
        if ok:
            out.clip_s.append(time.perf_counter() - started)
        else:
            out.clip_failed += 1
    return out


def run_server(
    artifact: Path, threads: int, tree: Path, log: Path, wav: bytes, s: Settings
) -> tuple[Measured, Measured, str]:
    with ServerProcess(artifact, threads, 16, 10, log, ("--http-threads", "64"), tree) as srv:
        measure(srv.url, wav, Settings(0, 0, 2, 2, 30, 60))  # warm-up
        alone = measure(srv.url, wav, s)
        with Tricklers(srv.url, s.connections) as tricklers:
            time.sleep(s.ramp_s)
            loaded = measure(srv.url, wav, s)
            loaded.reconnects = tricklers.reconnects
        return alone, loaded, srv.software


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "slow clients")
    add_artifact_options(parser)
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"commit to compare (default {BASELINE})"
    )
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else FULL
    artifact = require_artifact(args.artifact).resolve()
    clip: Clip = build_clips(read_testset(), 1, 2.0)[0]
    wav = wav_bytes(clip.samples)
    results: dict[str, tuple[Measured, Measured]] = {}
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        baseline = extract_tree(args.baseline, Path(tmp) / "baseline")
        from bench.common import REPO

        for label, tree in (
            (f"before (`{args.baseline}`, gthread)", baseline),
            ("this tree", REPO),
        ):
            alone, loaded, _ = run_server(
                artifact, args.threads, tree, Path(tmp) / f"{len(results)}.log", wav, s
            )
            results[label] = (alone, loaded)
            progress(f"{label}: {summary(alone)} | under load: {summary(loaded)}")
    finish(
        args,
        SECTION,
        "Slow clients (`python -m bench.slow_clients`)",
        render(args, s, clip, results),
    )
    return 0


def summary(m: Measured) -> str:
    probes = ", ".join(
        f"{p} p95 {_p(v, 95)} s ({m.probe_failed[p]} failed)" for p, v in m.probe_s.items()
    )
    return f"{probes}; clips p50 {_p(m.clip_s, 50)} s ({m.clip_failed} failed)"


def _p(values: list[float], q: float) -> str:
    return fmt(percentile(values, q), 3) if values else "—"


def render(
    args: argparse.Namespace, s: Settings, clip: Clip, results: dict[str, tuple[Measured, Measured]]
) -> str:
    rows = []
    for label, (alone, loaded) in results.items():
        for condition, m in (("alone", alone), (f"{s.connections} trickling", loaded)):
            base = statistics.median(alone.clip_s) if alone.clip_s else float("nan")
            clip_ratio = f"{statistics.median(m.clip_s) / base:.2f}×" if m.clip_s and base else "—"
            rows.append(
                [
                    label,
                    condition,
                    *(
                        f"{_p(m.probe_s[p], 50)} / {_p(m.probe_s[p], 95)} / "
                        f"{fmt(max(m.probe_s[p]), 3) if m.probe_s[p] else '—'}"
                        f" ({m.probe_failed[p]} of {s.probes} failed)"
                        for p in ("/healthz", "/readyz")
                    ),
                    f"{_p(m.clip_s, 50)} / {_p(m.clip_s, 95)} "
                    f"({m.clip_failed} of {s.clips} failed)",
                    clip_ratio,
                    m.reconnects if condition != "alone" else "—",
                ]
            )
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    return "\n\n".join(
        [
            f"Run: {mode}; artifact {artifact_label(args.artifact)}; one `kubescribe serve` per "
            f"tree (`--http-threads 64`, other settings default: `--header-timeout 10`, "
            f"`--body-min-rate-kb 16`). *Trickling*: {s.connections} connections each send one "
            f"byte of a request head per second (reopened at once when the server closes one), "
            f"for {s.ramp_s:g} s before and all through the measurement. Then, one at a time: "
            f"{s.probes} `GET /healthz`, {s.probes} `GET /readyz` (client timeout "
            f"{s.probe_timeout_s:g} s: a timeout is a failed probe), {s.clips} transcriptions "
            f"of a {clip.seconds:.1f} s speech clip (timeout {s.clip_timeout_s:g} s).",
            "\n".join(machine_facts(args.threads, ("onnxruntime", "gunicorn", "requests"))),
            markdown_table(
                [
                    "server",
                    "condition",
                    "/healthz p50 / p95 / max s",
                    "/readyz p50 / p95 / max s",
                    "2 s clip p50 / p95 s",
                    "clip p50 vs alone",
                    "connections closed by the server (408) and reopened",
                ],
                rows,
            ),
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
