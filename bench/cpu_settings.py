"""CPU settings of the runtime, before and after, in one run (`python -m bench.server --cpu`).

Three `kubescribe serve` processes on the same machine, clips and load, one after the other:

- *before*: what the runtime did before it read its container's CPU quota — onnxruntime's
  defaults, i.e. as many intra-op threads as the node has cores (``--threads <cores>``) and
  idle threads spinning (``--thread-spinning``);
- *after*: the defaults now — threads from the cgroup's CPU quota (``--threads 0``: the quota
  rounded up, or the usable CPUs without one) and no spinning;
- *after, spinning*: the same threads with spinning, to check that spinning off is not slower.

Each serves closed-loop clients (5 s clips, batching on) at a few concurrencies; besides
throughput and latency, the worker's CPU seconds per audio second (its
``process_cpu_seconds_total``) show what spinning costs: CPU burnt while waiting, which a pod's
CPU quota then lacks. On a machine without a quota *before* and *after* differ in spinning only;
in a pod limited to fewer CPUs than the node has, *before* also oversubscribes the quota.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.common import (
    finish,
    fmt,
    machine_facts,
    markdown_table,
    percentile,
    progress,
    ratio,
)

SECTION = "server-cpu"
CLIP_S = 5.0


@dataclass(frozen=True)
class Variant:
    name: str
    threads: int
    flags: tuple[str, ...]


def variants() -> list[Variant]:
    cores = os.cpu_count() or 1
    return [
        Variant("before: threads = node cores, spinning", cores, ("--thread-spinning",)),
        Variant("after: threads from the CPU quota, no spinning", 0, ()),
        Variant("after, spinning", 0, ("--thread-spinning",)),
    ]


def cpu_seconds(url: str) -> float:
    """The serving worker's CPU seconds so far (its /metrics)."""
    text = requests.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("process_cpu_seconds_total "):
            return float(line.split()[1])
    raise RuntimeError(f"{url}/metrics has no process_cpu_seconds_total")


def run_cpu(args: argparse.Namespace, settings: object, artifact: Path, wav: bytes) -> int:
    from bench.server import ServerProcess, run_cell, warm_up

    clients_list = (1, 2) if args.smoke else (1, 4, 16)
    batch = getattr(settings, "batch_size", 16)
    delay = getattr(settings, "max_delay_ms", 10.0)
    rows = []
    results: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-cpu-") as tmp:
        for index, variant in enumerate(variants()):
            log = Path(tmp) / f"server-{index}.log"
            progress(f"{variant.name}: starting")
            with ServerProcess(
                artifact, variant.threads, batch, delay, log, list(variant.flags)
            ) as srv:
                warm_up(srv.url, wav, 4)
                for clients in clients_list:
                    before = cpu_seconds(srv.url)
                    cell = run_cell(srv.url, wav, CLIP_S, clients, settings)  # type: ignore[arg-type]
                    used = cpu_seconds(srv.url) - before
                    audio = len(cell.latencies) * CLIP_S
                    per_audio = used / audio if audio else 0.0
                    results[variant.name, clients] = (cell.throughput, per_audio)
                    errors = sum(cell.errors.values())
                    rows.append(
                        [
                            variant.name,
                            clients,
                            len(cell.latencies),
                            errors,
                            fmt(cell.throughput),
                            fmt(percentile(cell.latencies, 50), 3) if cell.latencies else "—",
                            fmt(percentile(cell.latencies, 95), 3) if cell.latencies else "—",
                            fmt(per_audio, 3),
                        ]
                    )
                    progress(
                        f"{variant.name}: {clients} clients: {cell.throughput:.1f} audio s/s, "
                        f"{per_audio:.3f} CPU s per audio s"
                    )
    names = [v.name for v in variants()]
    summary = [
        [
            clients,
            ratio(results[names[1], clients][0], results[names[0], clients][0]),
            ratio(results[names[1], clients][1], results[names[0], clients][1]),
            ratio(results[names[1], clients][0], results[names[2], clients][0]),
            ratio(results[names[1], clients][1], results[names[2], clients][1]),
        ]
        for clients in clients_list
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    body = "\n\n".join(
        [
            f"Run: {mode}; {CLIP_S:g} s clips, `--max-batch-size {batch} --max-delay-ms "
            f"{delay:g}`; *before* = `--threads {os.cpu_count()} --thread-spinning` "
            "(onnxruntime's defaults: the node's cores, spinning), *after* = `--threads 0` "
            "(the container's CPU quota; this machine has none, so its usable CPUs), no spinning. "
            "CPU s per audio s: the serving worker's `process_cpu_seconds_total` over the cell.",
            "\n".join(machine_facts(None, ("onnxruntime", "gunicorn"))),
            markdown_table(
                [
                    "variant",
                    "clients",
                    "requests ok",
                    "failed",
                    "audio s/s",
                    "p50 s",
                    "p95 s",
                    "CPU s per audio s",
                ],
                rows,
            ),
            markdown_table(
                [
                    "clients",
                    "after / before (audio s/s)",
                    "after / before (CPU per audio s)",
                    "no spin / spin (audio s/s)",
                    "no spin / spin (CPU per audio s)",
                ],
                summary,
            ),
        ]
    )
    finish(args, SECTION, "CPU settings, before and after (`python -m bench.server --cpu`)", body)
    return 0
