"""Real pods under trouble (issue 18.4): a bad new version (not an artifact, a digest mismatch,
an artifact that fetches and verifies but fails to load, one that loads and answers but is
refused by its quality gate, issue 19.5) rolled back while the old pods serve,
a pod deleted and the node drained under load with the PodDisruptionBudget holding, and the
pod's resources real (the runtime sizes itself by its cgroup's CPU quota, its memory limit is the
cgroup's, no OOM kill under load). Each test prints its figures."""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from bad_artifacts import shuffled_tokens_artifact
from kube_cluster import Cluster, NodeHandle, OperatorProcess, eventually
from live import VERSION_LABEL, Models, condition, is_ready, pod_states
from real_pods import (
    CLUSTER_CA_BUNDLE,
    DEMO_URI,
    RUNTIME_CONTAINER,
    ArtifactServer,
    Load,
    real_model,
    restrict,
    runtime_pods,
    service_url,
    unloadable_artifact,
)

ZERO_SHA256 = "0" * 64
UNLOADABLE = "unloadable"  # served by the test over https: fetched and verified, fails to load
SHUFFLED = "shuffled"  # the same, loads and answers nonsense: its quality gate refuses it
GATE_VERDICT = re.compile(
    r"quality gate failed: WER (\d+\.\d\d) on 4 reference clips, "
    r"declared (\d+\.\d\d) \+ tolerance 0\.05"
)


def rolled_back(s: dict[str, Any]) -> bool:
    return (
        condition(s, "Stalled").get("reason") == "RolledBack"
        and condition(s, "Reconciling").get("status") == "False"
        and s.get("phase") != "Progressing"
    )


def load_failure(pods: list[dict[str, Any]], version: str) -> str | None:
    """Why a pod of ``version``'s runtime exited, once its fetch init container has completed
    (exit code 0: the artifact was fetched and verified): the termination message of its
    runtime container (the operator renders --exit-on-load-failure). ``pods``: every state
    the pods passed through (a watch), since the operator may delete the pod at once."""
    for pod in pods:
        if pod["metadata"]["labels"].get(VERSION_LABEL) != version:
            continue
        statuses = pod["status"].get("initContainerStatuses") or []
        fetch = next((s for s in statuses if s["name"] == "fetch"), {})
        done = (fetch.get("state") or {}).get("terminated") or {}
        if done.get("exitCode") != 0:
            continue
        for status in pod["status"].get("containerStatuses") or []:
            for state in (status.get("state"), status.get("lastState")):
                exited = (state or {}).get("terminated") or {}
                if exited.get("exitCode") == 3:
                    return str(exited.get("message", ""))
    return None


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
        # fetched over https and verified (the manifest's digests match), model.onnx not ONNX:
        # the runtime exits with the load error (crash loop): rolled back long before the
        # progress deadline, the operator quoting the error
        pytest.param(UNLOADABLE, id="fails-to-load"),
        # fetched and verified, loads, answers 200 with nonsense (tokens.txt permuted): the
        # quality gate refuses it before it turns ready (its verdict the termination message),
        # so it never takes traffic; rolled back quoting the measured and declared WER
        pytest.param(SHUFFLED, id="refused-by-quality-gate"),
    ],
)
def test_a_bad_version_is_rolled_back_while_the_old_pods_serve(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
    bad_model: dict[str, Any] | str,
    tmp_path: Path,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    body = real_model(replicas=2)
    body["spec"]["rollout"] = {"progressDeadlineSeconds": 120}
    models.create(body)
    models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
    old = sorted(p["metadata"]["name"] for p in runtime_pods(models))
    patch: dict[str, Any] = {"model": bad_model}
    load_error = None
    with contextlib.ExitStack() as stack:
        if bad_model in (UNLOADABLE, SHUFFLED):
            make = unloadable_artifact if bad_model == UNLOADABLE else shuffled_tokens_artifact
            digest = make(tmp_path / "artifacts" / "demo")
            server = stack.enter_context(ArtifactServer(tmp_path / "artifacts", real_node))
            manifest = requests.get(server.url("demo/kubescribe.yaml"), verify=server.ca_cert)
            assert manifest.status_code == 200, manifest.status_code
            cluster.kubectl(
                "create", "secret", "generic", "artifact-ca", "-n", namespace,
                f"--from-literal=REQUESTS_CA_BUNDLE={CLUSTER_CA_BUNDLE}",
            )  # fmt: skip
            patch = {
                "model": {"uri": server.url("demo"), "version": "0.2.0", "sha256": digest,
                          "credentialsSecret": "artifact-ca"},
                "pod": {"automountServiceAccountToken": True},  # its ca.crt: the cluster's CA
            }  # fmt: skip
        load = stack.enter_context(Load(service_url(models)))
        eventually(lambda: len(load.ok) >= 2, "the first file requests served")
        history = stack.enter_context(models.pod_history())
        t0 = time.monotonic()
        models.patch_spec("demo", patch)
        if bad_model in (UNLOADABLE, SHUFFLED):
            load_error = eventually(
                lambda: load_failure(history.seen(), "0.2.0"),
                lambda: (
                    "a 0.2.0 pod fetched (init container done) and its runtime exited "
                    f"(conditions now: {models.status().get('conditions')}; pods now: "
                    f"{[pod_states(p) for p in models.pods()]})"
                ),
                timeout=300,
            )
        stalled = models.wait_status(rolled_back, "the automatic rollback", timeout=400)
        rollback_s = time.monotonic() - t0
        eventually(
            lambda: sorted(p["metadata"]["name"] for p in runtime_pods(models)) == old,
            "the bad version's pods to go",
        )
    message = condition(stalled, "Stalled").get("message", "")
    print(
        f"rolled back in {rollback_s:.1f} s: {message!r}; "
        f"file requests ok {len(load.ok)}, failed {len(load.failed)}, "
        f"longest gap {load.longest_gap():.2f} s"
        + (f"; the 0.2.0 runtime's termination message: {load_error!r}" if load_error else "")
    )
    assert load.failed == []
    assert stalled["failedVersion"] == "0.2.0" and stalled["currentVersion"] == "0.1.0"
    assert stalled["history"][-1]["result"] == "RolledBack"
    if bad_model == SHUFFLED:
        verdict = GATE_VERDICT.search(load_error or "")
        assert verdict, load_error
        measured, declared = float(verdict[1]), float(verdict[2])
        print(f"quality gate: measured WER {measured:.2f}, declared {declared:.2f}")
        assert measured > declared + 0.05
        # the condition quotes both, as the pod said them (not a crash loop's back-off)
        assert verdict[0] in message and "timed out progressing" not in message, message
    elif load_error is not None:
        # fetched and verified, then refused by onnxruntime: a load failure, not a fetch one
        assert "model.onnx: cannot load" in load_error, load_error
        assert "init container" not in message, message
        # the crash loop rolled it back, quoting the error (not the 120 s progress deadline)
        assert "cannot load" in message and "timed out progressing" not in message, message


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
