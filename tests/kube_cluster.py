"""The tests' handle on the real local control plane (cluster/local_cluster.py).

One cluster per test run (the `cluster` fixture in tests/conftest.py): etcd, kube-apiserver,
controller-manager, scheduler and KWOK built from Go modules, on loopback. Every test that uses
it runs on one xdist worker, in a namespace of its own. The chart is installed once
(`kubescribe-system`, no operator pod: `replicaCount: 0`); `OperatorProcess` runs the real
operator locally, authenticated as the chart's ServiceAccount with a TokenRequest token, so the
real authoriser enforces the chart's RBAC and the audit log names it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))
from local_cluster import REAL_NODE_ENV, ClusterError, LocalCluster, build  # noqa: E402
from node import LABEL_KEY, LABEL_VALUE, NODE_NAME, NodeImages, RealNode  # noqa: E402

__all__ = [
    "ROOT", "Cluster", "ClusterError", "LocalCluster", "NodeHandle", "OperatorProcess", "build",
    "real_node_enabled", "start_real_node",
]  # fmt: skip

CHART = ROOT / "charts" / "kubescribe"
OPERATOR_NS = "kubescribe-system"
RELEASE = "kubescribe"
# The chart's ServiceAccount: the release's full name (chart templates/_helpers.tpl).
OPERATOR_SA = "kubescribe"
GROUP, VERSION, PLURAL = "kubescribe.io", "v1alpha1", "speechmodels"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition the test waited for did not come true in time."""


def eventually(
    probe: Callable[[], T | None],
    what: str | Callable[[], str],
    timeout: float = 120.0,
    every: float = 0.5,
) -> T:
    """Poll ``probe`` until it returns something truthy; the timeout only bounds a hang.
    ``what`` names the wait (a function: evaluated on a timeout, to say what was seen)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except kubernetes.client.ApiException as exc:
            value, last = None, exc
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise WaitTimeout(f"waited {timeout:.0f} s for {said}; last error: {last}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AuditEvent:
    user: str
    verb: str
    resource: str  # "deployments", "speechmodels/status", ...
    namespace: str
    name: str
    code: int
    uri: str
    group: str = ""  # "" for the core API
    user_agent: str = ""  # the operator's: "kubescribe-operator (host/pid)"
    time: str = ""  # requestReceivedTimestamp

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> AuditEvent:
        ref = raw.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        return cls(
            user=raw.get("user", {}).get("username", ""),
            verb=raw.get("verb", ""),
            resource=resource,
            namespace=ref.get("namespace", ""),
            name=ref.get("name", ""),
            code=int(raw.get("responseStatus", {}).get("code", 0)),
            uri=raw.get("requestURI", ""),
            group=ref.get("apiGroup", ""),
            user_agent=raw.get("userAgent", ""),
            time=raw.get("requestReceivedTimestamp", ""),
        )

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


class Cluster:
    """The running control plane, with the clients and tools a test needs."""

    def __init__(self, local: LocalCluster) -> None:
        self.local = local
        self.helm_home = local.dir / "helm"

    @property
    def kubeconfig(self) -> Path:
        return self.local.kubeconfig

    @property
    def bin(self) -> Path:
        return self.local.bin

    @property
    def audit_log(self) -> Path:
        return self.local.audit_log

    @property
    def server(self) -> str:
        return self.local.server

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and out.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.helm_home / "cache"),
            "HELM_CONFIG_HOME": str(self.helm_home / "config"),
            "HELM_DATA_HOME": str(self.helm_home / "data"),
        }
        out = subprocess.run(
            [str(self.bin / "helm"), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        if check and out.returncode != 0:
            raise ClusterError(f"helm {' '.join(args)}: {out.stderr.strip()}")
        return out

    def apply(self, obj: dict[str, Any] | str, *args: str) -> None:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        self.kubectl("apply", "-f", "-", *args, input=text)

    def install_stand_in_crd(self, group: str, version: str, kind: str, plural: str) -> str:
        """A minimal CRD (real group, kind and scope; any spec) for a resource of a product the
        local cluster does not run (Prometheus Operator, Argo CD); returns its name."""
        name = f"{plural}.{group}"
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        self.apply(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {
                    "group": group,
                    "scope": "Namespaced",
                    "names": {
                        "plural": plural,
                        "singular": kind.lower(),
                        "kind": kind,
                        "listKind": f"{kind}List",
                    },
                    "versions": [
                        {
                            "name": version,
                            "served": True,
                            "storage": True,
                            "schema": {"openAPIV3Schema": schema},
                        }
                    ],
                },
            }
        )
        self.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        return name

    def api_client(self) -> kubernetes.client.ApiClient:
        """A client with the admin's credentials (the test acting as a cluster user)."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    # ----------------------------------------------------------------- audit
    def audit_offset(self) -> int:
        return self.audit_log.stat().st_size

    def audit(self, since: int = 0, user: str | None = None) -> list[AuditEvent]:
        """Audit events logged after byte offset ``since`` (optionally of one user)."""
        with self.audit_log.open("rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
        events = [AuditEvent.parse(json.loads(line)) for line in lines if line.strip()]
        return [e for e in events if user is None or e.user == user]

    # --------------------------------------------------------------- identity
    def token_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ``namespace/account`` (TokenRequest API)."""
        token = self.kubectl(
            "create", "token", account, "-n", namespace, "--duration=12h"
        ).stdout.strip()
        return self.local.write_kubeconfig(path, account, {"token": token})

    # ------------------------------------------------------------- namespaces
    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)
        eventually(
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            f"the default ServiceAccount of {name}",
        )

    def install_chart(self, release: str, namespace: str, *values: str) -> None:
        self.helm(
            "upgrade", "--install", release, str(CHART), "--namespace", namespace,
            "--create-namespace", "--wait", "--timeout", "120s", *values,
        )  # fmt: skip


def service_account_user(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


OPERATOR_USER = service_account_user(OPERATOR_NS, OPERATOR_SA)

FAST_FLAGS = (
    "--liveness-port", "0",
    "--resync-seconds", "2",
    "--retry-backoff-seconds", "0.5",
    "--log-format", "json",
    "--peering-lifetime", "3",
)  # fmt: skip


class OperatorProcess:
    """`python -m kubescribe_operator.process` as the chart's ServiceAccount, with short timings.

    ``kill`` stops it hard (as a crashed pod would be); ``start`` again restarts it.
    """

    def __init__(self, kubeconfig: Path, log_dir: Path, *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        scope = ("--namespace", "-n", "--all-namespaces", "-A")
        self.extra = extra if any(s in extra for s in scope) else ("--all-namespaces", *extra)
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        assert self.proc is None
        self.runs += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with (self.log_dir / f"operator-{self.runs}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "kubescribe_operator.process", *FAST_FLAGS,
                    "--metrics-port", str(self.metrics_port), *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{i}.log").read_text(errors="replace")
            for i in range(1, self.runs + 1)
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return str(r.read().decode())


# ------------------------------------------------------------------------------- real node
def real_node_enabled() -> bool:
    """Real-pod tests get a real node unless KUBESCRIBE_REAL_NODE=0."""
    return os.environ.get(REAL_NODE_ENV, "1") != "0"


# What a pod spec needs to run on the real node (and nowhere else): docs/development.md.
REAL_NODE_SCHEDULING: dict[str, Any] = {
    "nodeSelector": {LABEL_KEY: LABEL_VALUE},
    "tolerations": [
        {"key": LABEL_KEY, "operator": "Equal", "value": LABEL_VALUE, "effect": "NoSchedule"}
    ],
}


@dataclass
class NodeHandle:
    """The started real node and the names of the images imported into it."""

    node: RealNode
    runtime_cpu: str
    operator: str
    name: str = NODE_NAME

    @property
    def ip(self) -> str:
        return self.node.slot.node_ip

    def in_netns(self, *argv: str) -> list[str]:
        return self.node.slot.in_netns(*argv)


_started: dict[Path, NodeHandle] = {}


def start_real_node(cluster: Cluster) -> NodeHandle:
    if cluster.local.dir not in _started:
        from images import ensure_images  # cluster/images.py: built from this repository

        built = ensure_images()
        node = cluster.local.start_node(NodeImages(tuple(built.archives), built.pause))
        _started[cluster.local.dir] = NodeHandle(node, built.runtime_cpu, built.operator)
    return _started[cluster.local.dir]
