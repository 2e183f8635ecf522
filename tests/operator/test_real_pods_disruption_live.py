"""Real pods under trouble (issue 18.4): a bad new version rolled back while the old pods serve,
a pod deleted and the node drained under load with the PodDisruptionBudget holding, and the
pod's resources real (the runtime sizes itself by its cgroup's CPU quota, its memory limit is the
cgroup's, no OOM kill under load). Each test prints its figures."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kube_cluster import Cluster, NodeHandle, OperatorProcess, eventually
from live import Models, condition, is_ready
from real_pods import (
    DEMO_URI,
    RUNTIME_CONTAINER,
    Load,
    real_model,
    restrict,
    runtime_pods,
    service_url,
)

ZERO_SHA256 = "0" * 64


def rolled_back(s: dict[str, Any]) -> bool:
    return (
        condition(s, "Stalled").get("reason") == "RolledBack"
        and condition(s, "Reconciling").get("status") == "False"
        and s.get("phase") != "Progressing"
    )


def no_restarts(models: Models) -> dict[str, Any]:
    """Restarts and last termination reasons of the runtime containers (none: no OOM kill)."""
    seen = {}
    for pod in models.pods():
        for status in pod["status"].get("containerStatuses") or []:
            last = (status.get("lastState") or {}).get("terminated") or {}
            if status.get("restartCount") or last:
                seen[pod["metadata"]["name"]] = (status.get("restartCount"), last.get("reason"))
    return seen


@pytest.mark.parametrize(
    "bad_model",
    [
        # not an artifact (a directory without a manifest): the fetch init container fails
        pytest.param({"uri": "/opt/kubescribe/models", "version": "0.2.0"}, id="not-an-artifact"),
        pytest.param(
            {"uri": DEMO_URI, "version": "0.2.0", "sha256": ZERO_SHA256}, id="digest-mismatch"
        ),
    ],
)
def test_a_bad_version_is_rolled_back_while_the_old_pods_serve(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
    bad_model: dict[str, Any],
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    body = real_model(replicas=2)
    body["spec"]["rollout"] = {"progressDeadlineSeconds": 120}
    models.create(body)
    models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
    old = sorted(p["metadata"]["name"] for p in runtime_pods(models))
    with Load(service_url(models)) as load:
        eventually(lambda: len(load.ok) >= 2, "the first file requests served")
        t0 = time.monotonic()
        models.patch_spec("demo", {"model": bad_model})
        stalled = models.wait_status(rolled_back, "the automatic rollback", timeout=400)
        rollback_s = time.monotonic() - t0
        eventually(
            lambda: sorted(p["metadata"]["name"] for p in runtime_pods(models)) == old,
            "the bad version's pods to go",
        )
    print(
        f"rolled back in {rollback_s:.1f} s: {condition(stalled, 'Stalled').get('message')!r}; "
        f"file requests ok {len(load.ok)}, failed {len(load.failed)}, "
        f"longest gap {load.longest_gap():.2f} s"
    )
    assert load.failed == []
    assert stalled["failedVersion"] == "0.2.0" and stalled["currentVersion"] == "0.1.0"
    assert stalled["history"][-1]["result"] == "RolledBack"


def test_a_deleted_pod_and_a_drained_node_under_load_fail_no_request(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    models.create(real_model(replicas=2))
    models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
    assert models.child("PodDisruptionBudget") is not None
    selector = "app.kubernetes.io/instance=demo"
    with Load(service_url(models)) as load:
        eventually(lambda: len(load.ok) >= 2, "the first file requests served")
        victim = runtime_pods(models)[0]["metadata"]["name"]
        cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
        eventually(
            lambda: (
                len(runtime_pods(models)) == 2
                and victim not in {p["metadata"]["name"] for p in runtime_pods(models)}
                and is_ready("0.1.0")(models.status())
            ),
            "a replacement for the deleted pod Ready",
            timeout=300,
        )
        after_delete = len(load.ok)
        # The only real node drained: one pod may go, the budget refuses the second while its
        # replacement cannot be scheduled (the node is cordoned), so the drain times out.
        try:
            drain = cluster.kubectl(
                "drain", real_node.name, f"--pod-selector={selector}", "--ignore-daemonsets",
                "--delete-emptydir-data", "--timeout=40s", check=False,
            )  # fmt: skip
            left = runtime_pods(models)
        finally:
            cluster.kubectl("uncordon", real_node.name)
        eventually(
            lambda: len(runtime_pods(models)) == 2 and is_ready("0.1.0")(models.status()),
            "both pods Ready again after the uncordon",
            timeout=300,
        )
    refused = "disruption budget" in drain.stderr
    print(
        f"file requests ok {len(load.ok)} ({after_delete} by the pod's replacement), failed "
        f"{len(load.failed)}, longest gap {load.longest_gap():.2f} s; drain exit "
        f"{drain.returncode}, budget refused an eviction: {refused}; pods left during the "
        f"drain: {len(left)}; restarts {no_restarts(models)}"
    )
    assert load.failed == []
    assert drain.returncode != 0 and refused, drain.stderr[-2000:]
    assert len(left) >= 1
    assert no_restarts(models) == {}


def test_the_runtime_sees_its_cgroup_limits(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    body = real_model()
    body["spec"]["runtime"].pop("threads")  # sized by the runtime from its CPU quota
    body["spec"]["runtime"]["resources"]["limits"]["cpu"] = "1"
    models.create(body)
    models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
    pod = runtime_pods(models)[0]
    limits = next(
        c["resources"]["limits"]
        for c in pod["spec"]["containers"]
        if c["name"] == RUNTIME_CONTAINER
    )
    probe = (
        "import json\n"
        "from kubescribe_runtime.cpu import cgroup_cpus, default_threads\n"
        "memory = open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip()\n"
        "print(json.dumps({'cpus': cgroup_cpus(), 'threads': default_threads(),\n"
        "                  'memory': int(memory)}))\n"
    )
    out = cluster.kubectl(
        "exec", pod["metadata"]["name"], "-n", namespace, "-c", RUNTIME_CONTAINER, "--",
        "python", "-c", probe,
    )  # fmt: skip
    seen = json.loads(out.stdout)
    print(f"limits {limits}; the runtime sees {seen}")
    assert seen["cpus"] == 1.0 and seen["threads"] == 1
    memory_limit = limits["memory"]
    assert memory_limit.endswith("Mi"), memory_limit
    assert seen["memory"] == int(memory_limit[:-2]) * 2**20
