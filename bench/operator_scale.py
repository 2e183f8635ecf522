"""Operator at scale: the real operator process against the local Kubernetes API of the tests.

    .venv/bin/python -m bench.operator_scale            # full run (a few minutes), updates the doc
    .venv/bin/python -m bench.operator_scale --smoke    # seconds: checks that it runs

Reuses ``tests/operator/kube`` (imported, not copied): the kmock-based emulator served on
loopback by ``KubeThread``, the resources the chart declares (``declare_resources``), the
Deployment controller fixture and ``OperatorProcess`` (`python -m kubescribe_operator.process`
with the tests' fast flags, here ``--standalone`` and a resync period of its own).

1. 200 SpeechModels are created at once (in the emulator, one watch event each); we wait until
   every one has its Deployment, Service and PodDisruptionBudget and a status, then until every
   one is Ready. API requests the operator made / reconciles it ran (its own metric);
2. idle resync: once nothing changes, one full resync period passes; the operator's write
   requests in it must be 0 (and its reconciles show that the resync ran);
3. 800 more (1000 in all): time until all are Ready, and the operator's peak memory (VmHWM of
   its process).

The Deployment controller fixture rescans every object for every Deployment on each tick (fine
for a handful, minutes per tick at 1000); :class:`IndexedController` gives it an index of owned
objects per tick and skips Deployments that are complete and unchanged. Its behaviour is the
fixture's (its ``_reconcile`` runs unchanged).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.common import (
    REPO,
    BenchError,
    base_parser,
    finish,
    fmt,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
)

sys.path.insert(0, str(REPO / "tests" / "operator"))

import kmock
from kube.deployment_controller import DeploymentController
from kube.emulator import Emulator
from kube.operator_process import OperatorProcess
from kube.runner import KubeThread


def _declare_resources() -> Callable[[Emulator], None]:
    """``declare_resources`` of tests/operator/conftest.py (not importable by name)."""
    path = REPO / "tests" / "operator" / "conftest.py"
    spec = importlib.util.spec_from_file_location("kubescribe_operator_test_conftest", path)
    if spec is None or spec.loader is None:
        raise BenchError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declare: Callable[[Emulator], None] = module.declare_resources
    return declare


SECTION = "operator"
NS = "default"
SM = "kubescribe.io/v1alpha1/speechmodels"
CHILDREN = ("apps/v1/deployments", "v1/services", "policy/v1/poddisruptionbudgets")
REPLICAS = 2  # a PodDisruptionBudget is made from 2 replicas on
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


@dataclass(frozen=True)
class Settings:
    first: int
    total: int
    resync_s: float
    timeout_s: float  # per phase
    quiet_s: float  # no write for this long: settled


FULL = Settings(first=200, total=1000, resync_s=20.0, timeout_s=240.0, quiet_s=2.0)
SMOKE = Settings(first=2, total=3, resync_s=1.0, timeout_s=60.0, quiet_s=0.5)


# ---- the Deployment controller, indexed ---------------------------------------------------


class IndexedController(DeploymentController):
    """The fixture's controller with an index of owned objects per tick (see the docstring)."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator, tick=0.1)
        self._index: dict[str, list[tuple[Any, Any]]] | None = None
        self._settled: dict[str, str] = {}  # deployment uid -> resourceVersion when complete

    def _build_index(self) -> dict[str, list[tuple[Any, Any]]]:
        index: dict[str, list[tuple[Any, Any]]] = {}
        for (resource, _, _), obj in list(self.emulator.objects.items()):
            if obj.deleted:
                continue
            for ref in obj.raw["metadata"].get("ownerReferences", []):
                index.setdefault(ref.get("uid"), []).append((resource, obj.raw))
        return index

    def _owned(self, resource: kmock.resource, namespace: str, owner_uid: str) -> list[Any]:
        if self._index is None:
            self._index = self._build_index()
        return [
            copy.deepcopy(raw)
            for res, raw in self._index.get(owner_uid, [])
            if res == resource and raw["metadata"].get("namespace") == namespace
        ]

    async def run(self) -> None:
        deployments = kmock.resource("apps/v1/deployments")
        while True:
            async with self.emulator._lock:
                self._index = None
                for (resource, _, _), obj in list(self.emulator.objects.items()):
                    if resource != deployments or obj.deleted:
                        continue
                    meta = obj.raw["metadata"]
                    if self._settled.get(meta["uid"]) == meta.get("resourceVersion"):
                        continue
                    await self._reconcile(copy.deepcopy(obj.raw))
                    status = obj.raw.get("status") or {}
                    replicas = obj.raw.get("spec", {}).get("replicas", 1)
                    if status.get("readyReplicas") == replicas == status.get("updatedReplicas"):
                        self._settled[meta["uid"]] = obj.raw["metadata"].get("resourceVersion")
                self._index = None
            await asyncio.sleep(self.tick)


# ---- helpers ------------------------------------------------------------------------------


def speechmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"uri": f"s3://models/{name}/1.0", "version": "1.0"},
            "replicas": REPLICAS,
        },
    }


def create_models(kube: KubeThread, names: Sequence[str]) -> None:
    """All at once: one pass under the emulator's lock, one ADDED event each."""
    resource = kmock.resource(SM)

    async def create() -> None:
        async with kube.emulator._lock:
            for name in names:
                await kube.emulator.store_create(resource, NS, speechmodel(name))

    kube.call(create, timeout=120)


@dataclass
class Progress:
    with_children: int = 0
    with_status: int = 0
    ready: int = 0


def count_progress(em: Emulator, names: Sequence[str]) -> Progress:
    result = Progress()
    models = {m["metadata"]["name"]: m for m in em.list(SM, NS)}
    owned: dict[str, set[str]] = {}
    for resource in CHILDREN:
        for child in em.list(resource, NS):
            owned.setdefault(child["metadata"]["name"], set()).add(resource)
    for name in names:
        status = (models.get(name) or {}).get("status") or {}
        children = owned.get(name, set()) == set(CHILDREN)
        result.with_children += children
        has_status = bool(status.get("phase")) and bool(status.get("observedGeneration"))
        result.with_status += children and has_status
        result.ready += status.get("phase") == "Ready"
    return result


@dataclass
class Phase:
    models: int
    children_s: float | None = None
    ready_s: float | None = None
    last: Progress = field(default_factory=Progress)


def wait_phase(kube: KubeThread, names: Sequence[str], started: float, timeout: float) -> Phase:
    phase = Phase(len(names))
    deadline = started + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        state = kube.call(lambda: count_progress(kube.emulator, names), timeout=120)
        phase.last = state
        if phase.children_s is None and state.with_status == len(names):
            phase.children_s = now - started
        if state.ready == len(names):
            phase.ready_s = now - started
            break
        if now - last_report >= 5:
            progress(
                f"  {now - started:5.1f} s: {state.with_status}/{len(names)} with children and "
                f"status, {state.ready} Ready"
            )
            last_report = now
        time.sleep(0.5)
    return phase


@dataclass
class Requests:
    total: int
    writes: int
    by_method: Counter[str]
    by_target: Counter[str]


def operator_requests(em: Emulator, start: int) -> tuple[Requests, int]:
    """The operator's HTTP requests from index ``start`` on (everything is the operator's:
    the benchmark itself creates through the emulator, not over HTTP), and the new end."""
    reqs = list(iter(em))[start:]
    methods: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    for r in reqs:
        method = "WATCH" if r.action == kmock.action.WATCH else r.method.value
        methods[method] += 1
        plural = r.resource.plural if r.resource is not None else None
        sub = f"/{r.subresource}" if getattr(r, "subresource", None) else ""
        targets[f"{r.action.value if r.action else method} {plural or r.url.path}{sub}"] += 1
    writes = sum(n for m, n in methods.items() if m in WRITE_METHODS)
    return Requests(len(reqs), writes, methods, targets), start + len(reqs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reconciles(metrics_url: str) -> Counter[str]:
    """``kubescribe_operator_reconciles_total`` by trigger, scraped from the operator."""
    text = requests.get(metrics_url, timeout=10).text
    result: Counter[str] = Counter()
    pattern = r'^kubescribe_operator_reconciles_total\{trigger="([^"]*)"\} ([0-9.e+]+)$'
    for match in re.finditer(pattern, text, re.MULTILINE):
        result[match[1]] += int(float(match[2]))
    return result


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM")


def wait_quiet(kube: KubeThread, seconds: float, timeout: float) -> None:
    """Until the operator wrote nothing for ``seconds`` (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    _, mark = kube.call(lambda: operator_requests(kube.emulator, 0))
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        new, mark = kube.call(lambda m=mark: operator_requests(kube.emulator, m))
        if new.writes:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= seconds:
            return


# ---- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    first: Phase
    first_requests: Requests
    first_reconciles: Counter[str]
    idle_requests: Requests
    idle_reconciles: Counter[str]
    idle_seconds: float
    second: Phase
    peak_rss_mb: float
    rss_after_first_mb: float


def benchmark(settings: Settings, tmp: Path) -> Report:
    names = [f"model-{i:04d}" for i in range(settings.total)]
    with KubeThread(_declare_resources()) as kube:
        controller = IndexedController(kube.emulator)
        kube.spawn(controller.run)
        kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
        metrics_port = free_port()
        operator = OperatorProcess(
            kubeconfig, tmp, "--standalone", "--resync-seconds", f"{settings.resync_s:g}",
            "--metrics-port", str(metrics_port), "--log-format", "json",
        )  # fmt: skip
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        operator.start()
        try:
            assert operator.proc is not None
            pid = operator.proc.pid
            deadline = time.monotonic() + 60
            while True:
                try:
                    before = reconciles(metrics_url)
                    break
                except requests.ConnectionError as exc:
                    if time.monotonic() > deadline or operator.proc.poll() is not None:
                        logs = operator.logs()[-3000:]
                        raise BenchError(f"the operator did not start:\n{logs}") from exc
                    time.sleep(0.2)
            wait_quiet(kube, settings.quiet_s, 30)
            _, mark = kube.call(lambda: operator_requests(kube.emulator, 0))

            first = names[: settings.first]
            progress(f"creating {len(first)} SpeechModels at once")
            started = time.monotonic()
            create_models(kube, first)
            phase1 = wait_phase(kube, first, started, settings.timeout_s)
            progress(
                f"{len(first)}: children and status after {phase1.children_s} s, "
                f"Ready after {phase1.ready_s} s"
            )
            # Settle (child events, the first resyncs), then count the whole phase.
            wait_quiet(kube, settings.quiet_s, settings.timeout_s)
            first_reqs, mark = kube.call(lambda: operator_requests(kube.emulator, mark))
            after_first = reconciles(metrics_url)
            first_rec = after_first - before
            rss_first = peak_rss_mb(pid)

            progress(f"idle: waiting one resync period ({settings.resync_s:g} s) and a bit")
            idle_started = time.monotonic()
            time.sleep(settings.resync_s * 2)
            idle_reqs, mark = kube.call(lambda: operator_requests(kube.emulator, mark))
            idle_seconds = time.monotonic() - idle_started
            idle_rec = reconciles(metrics_url) - after_first
            progress(
                f"idle: {idle_rec.get('resync', 0)} resync reconciles, "
                f"{idle_reqs.total} requests, {idle_reqs.writes} writes"
            )

            rest = names[settings.first :]
            progress(f"creating {len(rest)} more ({settings.total} in all)")
            started = time.monotonic()
            create_models(kube, rest)
            phase2 = wait_phase(kube, names, started, settings.timeout_s)
            progress(f"{settings.total}: Ready after {phase2.ready_s} s")
            peak = peak_rss_mb(pid)
        finally:
            operator.stop()
    return Report(
        phase1, first_reqs, first_rec, idle_reqs, idle_rec, idle_seconds, phase2, peak, rss_first
    )


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "operator scale")
    parser.add_argument("--keep-logs", type=Path, help="write the operator's log here")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        report = benchmark(settings, args.keep_logs or Path(tmp))
    finish(
        args,
        SECTION,
        "Operator at scale (`python -m bench.operator_scale`)",
        render(args, settings, report),
    )
    return 0


def _secs(value: float | None, timeout: float, last: int, total: int) -> str:
    if value is not None:
        return fmt(value)
    return f"not within {timeout:g} s ({last}/{total})"


def render(args: argparse.Namespace, settings: Settings, report: Report) -> str:
    first_total = sum(report.first_reconciles.values())
    per = report.first_requests.total / first_total if first_total else float("nan")
    non_watch = report.first_requests.total - report.first_requests.by_method.get("WATCH", 0)
    methods = ", ".join(f"{m} {n}" for m, n in sorted(report.first_requests.by_method.items()))
    triggers = ", ".join(f"{t} {n}" for t, n in sorted(report.first_reconciles.items()))
    idle_resyncs = report.idle_reconciles.get("resync", 0)
    idle_reads = report.idle_requests.total
    idle_total = sum(report.idle_reconciles.values())
    idle_triggers = ", ".join(f"{t} {n}" for t, n in sorted(report.idle_reconciles.items()))
    rows = [
        [
            f"{settings.first} SpeechModels created at once: all with Deployment, Service, "
            "PDB and status",
            _secs(
                report.first.children_s,
                settings.timeout_s,
                report.first.last.with_status,
                settings.first,
            ),
        ],
        [
            f"… all {settings.first} Ready",
            _secs(
                report.first.ready_s, settings.timeout_s, report.first.last.ready, settings.first
            ),
        ],
        [
            "operator API requests in that phase (settled)",
            f"{report.first_requests.total} ({methods})",
        ],
        ["reconciles in that phase (by trigger)", f"{first_total} ({triggers})"],
        [
            "API requests per reconcile",
            f"{per:.1f} (without watches: {non_watch / first_total:.1f})" if first_total else "n/a",
        ],
        [
            f"idle resync: writes in {report.idle_seconds:.0f} s (resync period "
            f"{settings.resync_s:g} s)",
            f"**{report.idle_requests.writes}** (reads: {idle_reads}; reconciles: "
            f"{idle_resyncs} by the resync timer, {idle_total} in all: {idle_triggers})",
        ],
        [
            "idle: the operator's requests by kind",
            ", ".join(f"{t} {n}" for t, n in report.idle_requests.by_target.most_common(8)),
        ],
        [
            f"{settings.total - settings.first} more created at once: all {settings.total} Ready",
            _secs(
                report.second.ready_s, settings.timeout_s, report.second.last.ready, settings.total
            ),
        ],
        [f"operator peak RSS (VmHWM) with {settings.first}", f"{report.rss_after_first_mb:.0f} MB"],
        [f"operator peak RSS (VmHWM) with {settings.total}", f"{report.peak_rss_mb:.0f} MB"],
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    return "\n\n".join(
        [
            f"Run: {mode}. The real operator process (`--standalone --resync-seconds "
            f"{settings.resync_s:g}`, JSON logs) against the tests' local Kubernetes API "
            "(kmock emulator on loopback) and their Deployment controller (indexed, see "
            f"`bench/operator_scale.py`); SpeechModels with `replicas: {REPLICAS}`, created in the "
            "emulator in one pass. The API and the controller share one Python event loop "
            "and the machine's cores with the operator, so the times are an upper bound of "
            "the operator's own cost.",
            "\n".join(machine_facts(None, ("kopf", "kmock", "kubernetes"))),
            markdown_table(["measure", "value"], rows),
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
