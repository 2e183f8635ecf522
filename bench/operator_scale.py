"""Operator at scale, on the real local control plane (cluster/local_cluster.py).

    .venv/bin/python -m bench.operator_scale            # 200, then 1000 SpeechModels
    .venv/bin/python -m bench.operator_scale --smoke    # 2, then 3: checks that it runs

Starts its own control plane (etcd, kube-apiserver with its audit log, controller-manager,
scheduler, KWOK) from the binaries `cluster/build.sh` builds, installs the chart without the
operator's pod, adds fake nodes enough for the pods, and runs the real operator process
(`python -m kubescribe_operator.process --standalone`) as the chart's ServiceAccount (a
TokenRequest token), so the audit log names every request it makes.

1. FIRST SpeechModels (`replicas: 1`, small requests) are created at once: the time until every
   one has a status, then until every one is Ready; the operator's API requests in that phase
   (audit log) per reconcile (its own metric) and per SpeechModel; its CPU time;
2. idle: once settled, every SpeechModel's resync timer fires at least once; the operator's
   requests and writes in that window, per SpeechModel per resync (budget: 5, writes: 0);
3. the rest, up to TOTAL, are created at once: the time until all are Ready, and the operator's
   peak RSS (VmHWM).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    BenchError,
    base_parser,
    finish,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
)

sys.path.insert(0, str(REPO / "cluster"))
from local_cluster import LocalCluster, build, free_port

SECTION = "operator"
NS = "bench"
OPERATOR_NS, OPERATOR_SA = "kubescribe-system", "kubescribe"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
PODS_PER_NODE = 250
BENCH_NODES = "bench=1"  # label selector of the nodes the benchmark adds


@dataclass(frozen=True)
class Settings:
    first: int
    total: int
    resync_s: float
    timeout_s: float  # per phase


FULL = Settings(first=200, total=1000, resync_s=60.0, timeout_s=900.0)
SMOKE = Settings(first=2, total=3, resync_s=3.0, timeout_s=120.0)


# ---------------------------------------------------------------------------- the cluster


class Bench:
    """The control plane, the chart and the operator process of one run."""

    def __init__(self, workdir: Path, settings: Settings) -> None:
        self.settings = settings
        self.cluster = LocalCluster(workdir / "cluster", bin_dir=build())
        self.workdir = workdir
        self.metrics_port = free_port()
        self.operator: subprocess.Popen[bytes] | None = None

    def kubectl(self, *args: str, input: str | None = None) -> str:
        out = subprocess.run(
            [str(self.cluster.bin / "kubectl"), "--kubeconfig", str(self.cluster.kubeconfig),
             *args],
            input=input, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if out.returncode != 0:
            raise BenchError(f"kubectl {' '.join(args[:3])}: {out.stderr.strip()[:500]}")
        return out.stdout

    def start(self, nodes: int) -> None:
        progress("starting the control plane")
        self.cluster.start()
        helm_home = self.workdir / "helm"
        homes = {f"HELM_{k}_HOME": str(helm_home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}
        env = {**os.environ, **homes}
        subprocess.run(
            [str(self.cluster.bin / "helm"), "--kubeconfig", str(self.cluster.kubeconfig),
             "upgrade", "--install", "kubescribe", str(REPO / "charts" / "kubescribe"),
             "--namespace", OPERATOR_NS, "--create-namespace", "--wait", "--timeout", "180s",
             "--set", "replicaCount=0"],
            check=True, capture_output=True, env=env, timeout=300,
        )  # fmt: skip
        self.kubectl("create", "namespace", NS)
        self.kubectl("apply", "-f", "-", input=json.dumps(fake_nodes(nodes)))
        self.kubectl("wait", "--for=condition=Ready", "node", "-l", BENCH_NODES, "--timeout=120s")
        # New nodes are tainted not-ready by the API server (as cluster/local_cluster.py says).
        self.kubectl(
            "taint", "nodes", "-l", BENCH_NODES, "node.kubernetes.io/not-ready:NoSchedule-"
        )
        token = self.kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=12h")
        config = json.loads(self.cluster.kubeconfig.read_text())
        config["users"] = [{"name": "admin", "user": {"token": token.strip()}}]
        operator_config = self.workdir / "operator-kubeconfig"
        operator_config.write_text(json.dumps(config))
        progress("starting the operator")
        env = {**os.environ, "KUBECONFIG": str(operator_config)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with (self.workdir / "operator.log").open("wb") as log:
            self.operator = subprocess.Popen(
                [sys.executable, "-m", "kubescribe_operator.process", "--standalone",
                 "--all-namespaces", "--liveness-port", "0", "--metrics-port",
                 str(self.metrics_port), "--resync-seconds", str(self.settings.resync_s),
                 "--log-format", "json"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            try:
                self.operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.operator.kill()
                self.operator.wait(timeout=10)
        self.cluster.stop()

    # --------------------------------------------------------------- measures
    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return str(r.read().decode())

    def reconciles(self) -> Counter[str]:
        found = re.findall(
            r'kubescribe_operator_reconciles_total\{trigger="(\w+)"\} (\S+)', self.metrics()
        )
        return Counter({k: int(float(v)) for k, v in found})

    def proc(self, key: str) -> float:
        """VmHWM (MB) or CPU seconds (user + system) of the operator process."""
        assert self.operator is not None
        pid = self.operator.pid
        if key == "cpu":
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise BenchError("no VmHWM")

    def phases(self) -> list[tuple[str, str]]:
        """(observedGeneration, phase) of every SpeechModel."""
        template = '{range .items[*]}{.status.observedGeneration},{.status.phase}{"\\n"}{end}'
        out = self.kubectl("get", "speechmodels", "-n", NS, "-o", f"jsonpath={template}")
        return [(g, p) for g, _, p in (line.partition(",") for line in out.splitlines() if line)]


def fake_nodes(count: int) -> dict[str, Any]:
    """KWOK nodes with room for PODS_PER_NODE small pods each."""
    room = {"cpu": "1000", "memory": "4Ti", "ephemeral-storage": "1Pi", "pods": str(PODS_PER_NODE)}
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"bench-{i}",
                    "annotations": {"kwok.x-k8s.io/node": "fake"},
                    "labels": {
                        "kubernetes.io/hostname": f"bench-{i}",
                        "type": "kwok",
                        "bench": "1",
                    },
                },
                "spec": {},
                "status": {"allocatable": room, "capacity": room},
            }
            for i in range(count)
        ],
    }


def speechmodel(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"uri": f"s3://models/{name}/1.0", "version": "1.0", "storage": "64Mi"},
            "runtime": {"resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}},
            "replicas": 1,
        },
    }


# ------------------------------------------------------------------------------ audit log


@dataclass
class Requests:
    by_kind: Counter[str] = field(default_factory=Counter)  # "verb resource"
    writes: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


class AuditReader:
    """The operator's requests (watches excluded: streams, not requests) since the last cut."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def cut(self) -> Requests:
        out = Requests()
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            raw = json.loads(line)
            if raw.get("user", {}).get("username") != OPERATOR_USER or raw["verb"] == "watch":
                continue
            if raw.get("requestURI") == "/readyz":  # the process's watchdog, not reconciles
                continue
            ref = raw.get("objectRef") or {}
            resource = ref.get("resource", "?") + (
                f"/{ref['subresource']}" if ref.get("subresource") else ""
            )
            out.by_kind[f"{raw['verb']} {resource}"] += 1
            out.writes += raw["verb"] in WRITE_VERBS
        return out


# ------------------------------------------------------------------------------- phases


def wait_for(probe: Callable[[], bool], timeout: float, every: float = 2.0) -> float | None:
    """Seconds until ``probe`` is true, None if not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if probe():
            return time.monotonic() - start
        time.sleep(every)
    return None


def create(bench: Bench, names: Sequence[str]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": [speechmodel(n) for n in names]}
    bench.kubectl("create", "-f", "-", input=json.dumps(body))


def counts(bench: Bench) -> tuple[int, int]:
    """(SpeechModels with a status written by the operator, Ready ones)."""
    phases = bench.phases()
    return sum(1 for g, _ in phases if g), sum(1 for _, p in phases if p == "Ready")


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, measure: str, value: str) -> None:
        progress(f"{measure}: {value}")
        self.rows.append((measure, value))


def secs(value: float | None, timeout: float) -> str:
    return f"{value:.1f} s" if value is not None else f"not within {timeout:g} s"


def top(requests: Requests, n: int = 8) -> str:
    return ", ".join(f"{k} {v}" for k, v in requests.by_kind.most_common(n)) or "none"


def benchmark(settings: Settings, workdir: Path) -> Report:
    report = Report()
    bench = Bench(workdir, settings)
    try:
        bench.start(nodes=max(1, -(-settings.total // PODS_PER_NODE)))
        audit = AuditReader(bench.cluster.audit_log)
        wait_for(lambda: _metrics_up(bench), 120, every=0.5)
        audit.cut()
        n = settings.first
        names = [f"m{i:04d}" for i in range(settings.total)]
        cpu0, rec0 = bench.proc("cpu"), bench.reconciles()
        create(bench, names[:n])
        t_status = wait_for(lambda: counts(bench)[0] >= n, settings.timeout_s)
        report.add(
            f"{n} SpeechModels created at once: all with a status",
            secs(t_status, settings.timeout_s),
        )
        t_ready = wait_for(lambda: counts(bench)[1] >= n, settings.timeout_s)
        report.add(f"… all {n} Ready", secs(t_ready, settings.timeout_s))
        time.sleep(min(10.0, settings.resync_s / 2))  # the last status writes land
        first = audit.cut()
        rec = bench.reconciles() - rec0
        cpu = bench.proc("cpu") - cpu0
        # A coalesced child event ran no reconcile (one already waiting covered it).
        reconciles = sum(rec.values()) - rec["coalesced"]
        by_trigger = ", ".join(f"{k} {v}" for k, v in rec.most_common())
        report.add(
            "reconciles in that phase (by trigger)",
            f"{reconciles} = {reconciles / n:.1f} per SpeechModel ({by_trigger}; coalesced: "
            "child events covered by a reconcile already waiting)",
        )
        report.add(
            "operator API requests in that phase",
            f"{first.total} ({first.writes} writes): {top(first)}",
        )
        report.add(
            "**API requests per reconcile**",
            f"**{first.total / max(reconciles, 1):.2f}** "
            f"(writes {first.writes / max(reconciles, 1):.2f})",
        )
        report.add("**API requests per SpeechModel until Ready**", f"**{first.total / n:.1f}**")
        report.add(
            "operator CPU in that phase",
            f"{cpu:.1f} s ({1000 * cpu / max(reconciles, 1):.1f} ms per reconcile)",
        )
        report.add(f"operator peak RSS (VmHWM) with {n}", f"{bench.proc('rss'):.0f} MB")

        # Idle: every timer fires at least once more, nothing changes.
        audit.cut()
        resync0 = bench.reconciles()["resync"]
        t0 = time.monotonic()
        wait_for(
            lambda: bench.reconciles()["resync"] >= resync0 + n,
            settings.resync_s * 3 + 60,
            every=1.0,
        )
        idle = audit.cut()
        resyncs = bench.reconciles()["resync"] - resync0
        per = idle.total / max(resyncs, 1)
        report.add(
            f"**idle resync: writes** ({resyncs} resyncs in {time.monotonic() - t0:.0f} s)",
            f"**{idle.writes}**",
        )
        report.add(
            "**idle: requests per SpeechModel per resync** (budget 5)",
            f"**{per:.2f}** ({idle.total} in all: {top(idle)})",
        )

        rest = settings.total - n
        rss_before = bench.proc("rss")
        create(bench, names[n:])
        t_all = wait_for(lambda: counts(bench)[1] >= settings.total, settings.timeout_s, every=5.0)
        seen, ready = counts(bench)
        report.add(
            f"{rest} more created at once: all {settings.total} Ready",
            secs(t_all, settings.timeout_s)
            + ("" if t_all else f" ({ready} Ready, {seen} with a status)"),
        )
        more = audit.cut()
        report.add(
            f"operator API requests for the {rest} more",
            f"{more.total} ({more.total / max(rest, 1):.1f} per SpeechModel; {more.writes} writes)",
        )
        report.add(
            f"**operator peak RSS (VmHWM) with {settings.total}**",
            f"**{max(rss_before, bench.proc('rss')):.0f} MB**",
        )
    finally:
        bench.stop()
    return report


def _metrics_up(bench: Bench) -> bool:
    try:
        bench.metrics()
    except OSError:
        return False
    return True


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.split("\n")[0])
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    with tempfile.TemporaryDirectory(prefix="kubescribe-operator-bench-") as tmp:
        report = benchmark(settings, Path(tmp))
    body = "\n".join(
        [
            f"Run: {'smoke (tiny sizes: not a measurement)' if args.smoke else 'full'}. "
            "The real operator process "
            f"(`--standalone --resync-seconds {settings.resync_s:g}`) as the chart's "
            "ServiceAccount against the real local control plane (`cluster/local_cluster.py`: "
            "etcd, kube-apiserver with its audit log, controller-manager, scheduler, KWOK fake "
            "nodes), all on this machine's cores; SpeechModels with `replicas: 1` and small "
            "requests, created with one `kubectl create` each phase. Requests are the operator's "
            "own, from the API server's audit log (watches excluded).",
            "",
            *machine_facts(None, packages=("kopf", "kubernetes")),
            "",
            markdown_table(["measure", "value"], report.rows),
        ]
    )
    finish(args, SECTION, "Operator at scale (`python -m bench.operator_scale`)", body)
    return 0


main = main_wrapper(run)

if __name__ == "__main__":
    sys.exit(main())
