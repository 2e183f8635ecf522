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
import os
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from resource import RUSAGE_SELF, getrusage
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
    quiet_s: float  # no reconcile but the timer's for this long: settled
    settle_timeout_s: float


FULL = Settings(
    first=200, total=1000, resync_s=20.0, timeout_s=150.0, quiet_s=3.0, settle_timeout_s=240.0
)
SMOKE = Settings(first=2, total=3, resync_s=1.0, timeout_s=60.0, quiet_s=1.0, settle_timeout_s=30.0)


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


# ---- the emulator, with watches that resume -----------------------------------------------


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


def wait_phase(
    kube: KubeThread,
    names: Sequence[str],
    started: float,
    timeout: float,
    need_ready: bool,
) -> Phase:
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
        if phase.children_s is not None and (phase.ready_s is not None or not need_ready):
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


class RequestLog:
    """The operator's HTTP requests, drained from kmock's request logs as they come.

    kmock records every request and matches each new one against the recorded ones
    (``View.__contains__``): its cost per request grows with its log (0.1 s after ~1000
    requests), which would make the API, not the operator, the bottleneck at scale. A task on
    the API's loop drains those logs (kmock's private ``_requests`` lists) every 50 ms and
    keeps a summary of each request. Every request is the operator's: the benchmark creates
    objects inside the emulator, not over HTTP.
    """

    def __init__(self, kube: KubeThread) -> None:
        self.kube = kube
        self.entries: list[tuple[str, str]] = []  # (method, "action resource[/sub]")
        kube.spawn(self._run)

    def _drain(self) -> None:
        em = self.kube.emulator
        log: list[Any] = em._requests
        self.entries += [_summary(r) for r in log]
        log.clear()
        for reaction in em._payloads:  # each reaction keeps the requests it served
            getattr(reaction, "_requests", []).clear()

    async def _run(self) -> None:
        while True:
            self._drain()
            await asyncio.sleep(0.05)

    def cut(self) -> Requests:
        """The requests since the previous cut."""

        def take() -> list[tuple[str, str]]:
            self._drain()
            entries, self.entries = self.entries, []
            return entries

        entries = self.kube.call(take)
        methods: Counter[str] = Counter(m for m, _ in entries)
        targets: Counter[str] = Counter(t for _, t in entries)
        writes = sum(n for m, n in methods.items() if m in WRITE_METHODS)
        return Requests(len(entries), writes, methods, targets)


def _summary(r: Any) -> tuple[str, str]:
    method = "WATCH" if r.action == kmock.action.WATCH else r.method.value
    plural = r.resource.plural if r.resource is not None else None
    sub = f"/{r.subresource}" if getattr(r, "subresource", None) else ""
    action = r.action.value if r.action else method
    return method, f"{action} {plural or r.url.path}{sub}"


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_settled(metrics_url: str, quiet_s: float, timeout: float) -> bool:
    """Until the operator ran no reconcile but its resync timer's for ``quiet_s`` (its queue
    of watch events is drained): True, or False when ``timeout`` passed first."""
    deadline = time.monotonic() + timeout
    last = reconciles(metrics_url)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = reconciles(metrics_url)
        if any(now[t] != last[t] for t in set(now) | set(last) if t != "resync"):
            quiet_since = time.monotonic()
        last = now
        if time.monotonic() - quiet_since >= quiet_s:
            return True
    return False


# ---- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    first: Phase
    settled: bool
    first_requests: Requests
    first_reconciles: Counter[str]
    first_operator_cpu_s: float
    first_harness_cpu_s: float
    idle_requests: Requests
    idle_reconciles: Counter[str]
    idle_seconds: float
    second: Phase
    peak_rss_mb: float
    rss_after_first_mb: float


def harness_cpu() -> float:
    usage = getrusage(RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def benchmark(settings: Settings, tmp: Path) -> Report:
    names = [f"model-{i:04d}" for i in range(settings.total)]
    thread = KubeThread(_declare_resources())
    with thread as kube:
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
            time.sleep(1.0)  # its watches are up
            log = RequestLog(kube)
            log.cut()
            cpu0, harness0 = cpu_seconds(pid), harness_cpu()

            first = names[: settings.first]
            progress(f"creating {len(first)} SpeechModels at once")
            started = time.monotonic()
            create_models(kube, first)
            phase1 = wait_phase(kube, first, started, settings.timeout_s, need_ready=True)
            progress(
                f"{len(first)}: children and status after {phase1.children_s} s, "
                f"Ready after {phase1.ready_s} s"
            )
            # Let the operator drain its queue of child events, then count the whole phase.
            settled = wait_settled(metrics_url, settings.quiet_s, settings.settle_timeout_s)
            progress(f"settled: {settled}")
            first_reqs = log.cut()
            after_first = reconciles(metrics_url)
            first_rec = after_first - before
            cpu1, harness1 = cpu_seconds(pid), harness_cpu()
            rss_first = peak_rss_mb(pid)

            idle_s = settings.resync_s * 1.5
            progress(f"idle: {idle_s:g} s (the resync period is {settings.resync_s:g} s)")
            idle_started = time.monotonic()
            time.sleep(idle_s)
            idle_reqs = log.cut()
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
            phase2 = wait_phase(kube, names, started, settings.timeout_s, need_ready=False)
            progress(f"{settings.total}: children and status after {phase2.children_s} s")
            peak = peak_rss_mb(pid)
        finally:
            operator.stop()
    return Report(
        first=phase1,
        settled=settled,
        first_requests=first_reqs,
        first_reconciles=first_rec,
        first_operator_cpu_s=cpu1 - cpu0,
        first_harness_cpu_s=harness1 - harness0,
        idle_requests=idle_reqs,
        idle_reconciles=idle_rec,
        idle_seconds=idle_seconds,
        second=phase2,
        peak_rss_mb=peak,
        rss_after_first_mb=rss_first,
    )


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "operator scale")
    parser.add_argument("--keep-logs", type=Path, help="write the operator's log here")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory(prefix="kubescribe-bench-") as tmp:
        report = benchmark(settings, args.keep_logs or Path(tmp))
    body = render(args, settings, report)
    finish(args, SECTION, "Operator at scale (`python -m bench.operator_scale`)", body)
    return 0


def _secs(phase: Phase, done: int, timeout: float) -> str:
    value = phase.children_s
    if value is not None:
        return f"{fmt(value)} s"
    return f"not within {timeout:g} s ({done}/{phase.models})"


def render(args: argparse.Namespace, settings: Settings, report: Report) -> str:
    first = report.first
    first_total = sum(report.first_reconciles.values())
    reqs = report.first_requests
    per = reqs.total / first_total if first_total else float("nan")
    methods = ", ".join(f"{m} {n}" for m, n in sorted(reqs.by_method.items()))
    triggers = ", ".join(f"{t} {n}" for t, n in sorted(report.first_reconciles.items()))
    idle_total = sum(report.idle_reconciles.values())
    idle_triggers = ", ".join(f"{t} {n}" for t, n in sorted(report.idle_reconciles.items()))
    ready = (
        f"{fmt(first.ready_s)} s"
        if first.ready_s is not None
        else f"not within {settings.timeout_s:g} s ({first.last.ready}/{first.models})"
    )
    second = report.second
    second_children = (
        f"{fmt(second.children_s)} s"
        if second.children_s is not None
        else f"not within {settings.timeout_s:g} s ({second.last.with_status}/{second.models}"
        f"; {second.last.ready} Ready)"
    )
    cpu_per = report.first_operator_cpu_s / first_total * 1000 if first_total else float("nan")
    rows = [
        [
            f"{settings.first} SpeechModels created at once: all with Deployment, Service, "
            "PDB and status",
            _secs(first, first.last.with_status, settings.timeout_s),
        ],
        [f"… all {settings.first} Ready", ready],
        [
            "settled (no reconcile but the resync timer's for "
            f"{settings.quiet_s:g} s) within {settings.settle_timeout_s:g} s",
            "yes" if report.settled else "**no**: still reconciling child events",
        ],
        [
            "reconciles in that phase (by trigger)",
            f"{first_total} = {first_total / settings.first:.1f} per SpeechModel ({triggers})",
        ],
        ["operator API requests in that phase", f"{reqs.total} ({methods})"],
        [
            "**API requests per reconcile**",
            f"**{per:.1f}** (writes {reqs.writes / first_total:.2f})" if first_total else "n/a",
        ],
        [
            "CPU in that phase: operator / API emulator + controller + this script",
            f"{report.first_operator_cpu_s:.1f} s ({cpu_per:.0f} ms per reconcile) / "
            f"{report.first_harness_cpu_s:.1f} s",
        ],
        [
            f"**idle resync: writes** in {report.idle_seconds:.0f} s (resync period "
            f"{settings.resync_s:g} s)",
            f"**{report.idle_requests.writes}** (reads: {report.idle_requests.total}; "
            f"reconciles: {idle_total}: {idle_triggers})",
        ],
        [
            "idle: the operator's requests by kind",
            ", ".join(f"{t} {n}" for t, n in report.idle_requests.by_target.most_common(8)),
        ],
        [
            f"{settings.total - settings.first} more created at once: all {settings.total} "
            "with children and status",
            second_children,
        ],
        [f"operator peak RSS (VmHWM) with {settings.first}", f"{report.rss_after_first_mb:.0f} MB"],
        [
            f"**operator peak RSS (VmHWM) with {settings.total}**",
            f"**{report.peak_rss_mb:.0f} MB**",
        ],
    ]
    mode = "smoke (tiny sizes: not a measurement)" if args.smoke else "full"
    return "\n\n".join(
        [
            f"Run: {mode}. The real operator process (`--standalone --resync-seconds "
            f"{settings.resync_s:g}`, JSON logs) against the tests' local Kubernetes API "
            "(kmock emulator on loopback, with watches that resume from their resourceVersion) "
            "and their Deployment controller (indexed; see `bench/operator_scale.py`); "
            f"SpeechModels with `replicas: {REPLICAS}`, created in the emulator in one pass. "
            "The emulator (pure Python: every list scans every object) and the controller "
            "share one event loop and the machine's cores with the operator: wall-clock times "
            "are an upper bound of the operator's own cost, its CPU time is its own.",
            "\n".join(machine_facts(None, ("kopf", "kmock", "kubernetes"))),
            markdown_table(["measure", "value"], rows),
        ]
    )


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
