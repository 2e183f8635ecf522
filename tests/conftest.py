"""Fixtures shared by every test directory: the real local control plane.

`cluster` starts a control plane per test worker that needs one (session scope), built by
cluster/build.sh (`make test` builds it first, so no test waits for a compiler); the tests that
use it are split into KUBESCRIBE_TEST_CLUSTERS xdist groups (default 2), so a run holds at most
that many clusters. `real_node` starts the one real node (cluster/node.py) of the cluster whose
group runs the real-pod tests: all of them share one group, and the other clusters stay
KWOK-only. `namespace` gives a test a namespace of its
own. `operator_kubeconfig` authenticates as the chart's ServiceAccount; `live_operator` runs
the real operator process with it for one test. When the run ends, the audit log of the whole
run is read: a request of the chart's ServiceAccount the API server refused (403) while a
`live_operator` ran fails it, except while `restart_apiserver` had the API server restarting.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kube_cluster import (
    OPERATOR_NS,
    OPERATOR_SA,
    OPERATOR_USER,
    RELEASE,
    AuditEvent,
    Cluster,
    LocalCluster,
    NodeHandle,
    OperatorProcess,
    build,
    real_node_enabled,
    start_real_node,
)

CLUSTER_FIXTURES = frozenset(
    {"cluster", "namespace", "operator_kubeconfig", "live_operator", "restart_apiserver",
     "real_node"}
)  # fmt: skip
# Control planes per run: the tests that need one are split into this many xdist groups (whole
# modules, balanced by an estimate of their time), and each worker that runs a group starts its
# own cluster; within a group tests run one at a time.
CLUSTERS = int(os.environ.get("KUBESCRIBE_TEST_CLUSTERS", "2"))


def _cost(item: pytest.Item) -> int:
    """A rough weight: a test with a live operator waits for reconciles, a real-pod test for a
    real rollout, others are quick."""
    names = getattr(item, "fixturenames", ())
    return 30 if "real_node" in names else 10 if "live_operator" in names else 1


def _wants_real_node(items: list[pytest.Item]) -> bool:
    return any("real_node" in getattr(item, "fixturenames", ()) for item in items)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    load = [0] * max(1, CLUSTERS)
    # The real-pod modules first, all into group 0: one real node per run.
    heaviest_first = sorted(
        modules.items(),
        key=lambda kv: (not _wants_real_node(kv[1]), -sum(map(_cost, kv[1])), kv[0]),
    )
    for _, module_items in heaviest_first:
        group = 0 if _wants_real_node(module_items) else load.index(min(load))
        load[group] += sum(map(_cost, module_items))
        for item in module_items:
            item.add_marker(pytest.mark.xdist_group(f"cluster-{group}"))


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    bin_dir = os.environ.get("KUBESCRIBE_CLUSTER_BIN")
    # Room for a real node (its namespace; the API server on its veth) where real-pod tests were
    # collected; `real_node` starts it on the worker that runs them.
    real = real_node_enabled() and _wants_real_node(request.session.items)
    local = LocalCluster(
        tmp_path_factory.mktemp("cluster"), Path(bin_dir) if bin_dir else build(), real_node=real
    )
    local.start()
    handle = Cluster(local)
    try:
        # The chart as a platform team installs it, without the operator's pod: the tests run
        # the operator process locally, as the chart's ServiceAccount.
        handle.install_chart(RELEASE, OPERATOR_NS, "--set", "replicaCount=0")
        yield handle
        # RBAC, the whole run: the chart's ServiceAccount was refused nothing (issue 10.4).
        refused = refused_requests(handle, OPERATOR_USER)
        assert not refused, f"the API server refused the chart's ServiceAccount: {refused[:20]}"
    finally:
        local.stop(keep_state=bool(os.environ.get("KUBESCRIBE_KEEP_CLUSTER")))


# Audit-log byte ranges in which the API server was restarting (`restart_apiserver`): a starting
# kube-apiserver answers before its RBAC caches are filled and forbids everything meanwhile.
_RESTARTS: list[tuple[int, int]] = []
# Audit-log byte ranges in which the standard operator (`live_operator`) ran: the whole-run check
# covers those; tests that run an operator of another release or alter RBAC check their own.
_OPERATOR_RUNS: list[tuple[int, int]] = []


def refused_requests(cluster: Cluster, user: str) -> list[str]:
    """The requests of ``user`` answered 403 in the audit log of the whole run while the
    standard operator ran (restarts of the API server aside)."""
    needle = json.dumps(user).encode()
    lines, offset = [], 0
    with cluster.audit_log.open("rb") as log:
        for line in log:
            restarting = any(start <= offset < end for start, end in _RESTARTS)
            operating = any(start <= offset < end for start, end in _OPERATOR_RUNS)
            if needle in line and b'"code":403' in line and operating and not restarting:
                lines.append(line)
            offset += len(line)
    events = [AuditEvent.parse(json.loads(line)) for line in lines]
    return [f"{e.verb} {e.uri}" for e in events if e.user == user and e.code == 403]


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> NodeHandle:
    """The cluster's real node, started on first use (images from cluster/images.py)."""
    return start_real_node(cluster)


@pytest.fixture()
def restart_apiserver(cluster: Cluster) -> Callable[..., None]:
    """Restart the API server (SIGTERM, then started again on its port; returns once ready).
    ``restart(while_down)`` runs ``while_down`` while it is stopped (an outage)."""

    def restart(while_down: Callable[[], object] | None = None) -> None:
        start = cluster.audit_offset()
        cluster.local.restart_apiserver(while_down)
        _RESTARTS.append((start, cluster.audit_offset()))

    return restart


@pytest.fixture()
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return cluster.token_kubeconfig(OPERATOR_NS, OPERATOR_SA, path)


@pytest.fixture()
def live_operator(
    cluster: Cluster, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The real operator (every namespace, the chart's ServiceAccount) for one test."""
    proc = OperatorProcess(operator_kubeconfig, tmp_path)
    since = cluster.audit_offset()
    proc.start()
    try:
        yield proc
    finally:
        # Its models go while it still runs (it releases their finalizers), then it stops.
        cluster.kubectl(
            "delete", "speechmodels", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        proc.kill()
        _OPERATOR_RUNS.append((since, cluster.audit_offset()))
        print(proc.logs()[-20000:])  # shown by pytest when the test fails
