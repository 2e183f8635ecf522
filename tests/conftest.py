"""Fixtures shared by every test directory: the real local control plane.

`cluster` starts a control plane per test worker that needs one (session scope), built by
cluster/build.sh (`make test` builds it first, so no test waits for a compiler); the tests that
use it are split into KUBESCRIBE_TEST_CLUSTERS xdist groups (default 2), so a run holds at most
that many clusters. `namespace` gives a test a namespace of its
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
    OperatorProcess,
    build,
)

CLUSTER_FIXTURES = frozenset(
    {"cluster", "namespace", "operator_kubeconfig", "live_operator", "restart_apiserver"}
)
# Control planes per run: the tests that need one are split into this many xdist groups (whole
# modules, balanced by an estimate of their time), and each worker that runs a group starts its
# own cluster; within a group tests run one at a time.
CLUSTERS = int(os.environ.get("KUBESCRIBE_TEST_CLUSTERS", "2"))


def _cost(item: pytest.Item) -> int:
    """A rough weight: a test with a live operator waits for reconciles, others are quick."""
    return 10 if "live_operator" in getattr(item, "fixturenames", ()) else 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    load = [0] * max(1, CLUSTERS)
    heaviest_first = sorted(modules.items(), key=lambda kv: (-sum(map(_cost, kv[1])), kv[0]))
    for _, module_items in heaviest_first:
        group = load.index(min(load))
        load[group] += sum(map(_cost, module_items))
        for item in module_items:
            item.add_marker(pytest.mark.xdist_group(f"cluster-{group}"))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bin_dir = os.environ.get("KUBESCRIBE_CLUSTER_BIN")
    local = LocalCluster(tmp_path_factory.mktemp("cluster"), Path(bin_dir) if bin_dir else build())
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
