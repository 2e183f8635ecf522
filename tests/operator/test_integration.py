"""The real operator on the real local control plane (DESIGN.md, "How it is tested"): what it
makes of a SpeechModel, from creation through rollouts, rollbacks and scaling to deletion.

Each test has a namespace of its own and the real operator process (`live_operator`: the
chart's ServiceAccount, every namespace, a resync every 2 s). The real Deployment, ReplicaSet,
HPA and garbage-collector controllers and KWOK's fake nodes do the rest; pods become Ready at
once, or stay Pending or crash-loop on cue (`live.HOLD_URI`, `CRASH_URI`, `ZERO_SHA256`). The
API server's audit log says what the operator asked of it. Waits poll with timeouts that only
bound a hang. The operator as a process (restarts, replicas, scope, API errors, API usage):
test_integration_process.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kube_cluster import Cluster, OperatorProcess, eventually
from live import (
    CRASH_URI,
    HOLD_URI,
    TEST_MANAGER,
    ZERO_SHA256,
    Models,
    condition,
    history,
    is_ready,
    manifest,
    operator_requests,
    operator_writes,
    rolling_to,
    wait_resyncs,
)

Obj = dict[str, Any]
# The timeout only bounds a hang (every wait inside is bounded on its own).
pytestmark = pytest.mark.timeout(300)

SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


def rolled_back(s: Obj) -> bool:
    return (
        condition(s, "Stalled").get("status") == "True"
        and condition(s, "Stalled").get("reason") == "RolledBack"
        and condition(s, "Reconciling").get("status") == "False"
        and s.get("phase") != "Progressing"
    )


def spec_managers(model: Obj) -> set[str]:
    """The field managers that own anything under the SpeechModel's spec."""
    entries = model["metadata"].get("managedFields") or []
    return {e["manager"] for e in entries if "f:spec" in (e.get("fieldsV1") or {})}


# ------------------------------------------------------------------------ create and roll


def test_create_makes_children_and_ready_status(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    since = cluster.audit_offset()
    models.create(manifest())
    status = models.wait_status(is_ready("1.0"), "1.0 ready")
    model = models.get()
    assert model is not None
    uid = model["metadata"]["uid"]
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        child = models.child(kind)
        assert child is not None, kind
        refs = [
            (r["kind"], r["uid"], r.get("controller"), r.get("blockOwnerDeletion"))
            for r in child["metadata"]["ownerReferences"]
        ]
        assert refs == [("SpeechModel", uid, True, True)], kind
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "kubescribe-operator", kind
        assert labels["app.kubernetes.io/instance"] == "demo", kind
    assert models.child("HorizontalPodAutoscaler") is None  # fixed replicas: no HPA
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["lastKnownGood"]["version"] == "1.0"
    assert history(status) == [("1.0", "Succeeded")]
    assert status["endpoint"].startswith(f"http://demo.{namespace}.svc")
    # The spec is the user's (GitOps owns it): the operator writes the status, and on the
    # SpeechModel itself only kopf's finalizer.
    assert spec_managers(model) == {TEST_MANAGER}
    assert model["metadata"]["finalizers"] == ["kubescribe.io/operator"]
    writes = operator_requests(cluster, since, namespace)
    assert any(e.verb == "patch" and e.resource == "speechmodels/status" for e in writes)
    # Children: server-side apply under the operator's field manager, after a dry-run create
    # (the name is free: apply would take over someone else's object).
    for e in writes:
        if e.is_write and e.resource in ("deployments", "services", "poddisruptionbudgets"):
            assert "fieldManager=kubescribe-operator" in e.uri, e.uri
            assert e.verb == "patch" or (e.verb == "create" and "dryRun=All" in e.uri), e.uri


def test_version_bump_rolls_out_to_ready(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(rollout={"maxSurge": "100%", "progressDeadlineSeconds": 600}))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    (first_rs,) = [rs["metadata"]["name"] for rs in models.replicasets()]
    models.bump("demo", "2.0", uri=HOLD_URI.format("2.0"))  # its pods wait for a release
    rolling = models.wait_status(rolling_to("2.0", updated=2), "the rollout in progress")
    assert rolling["currentVersion"] == "1.0"
    assert condition(rolling, "Ready")["status"] == "True"  # 1.0 keeps serving meanwhile
    # maxUnavailable 0: the old pods stay until the new ones are Ready, in a new ReplicaSet.
    assert models.pods_by_version() == {"1.0": 2, "2.0": 2}
    assert len(models.replicasets()) == 2
    models.release_held_pods()
    done = models.wait_status(is_ready("2.0"), "2.0 ready")
    assert done["lastKnownGood"]["version"] == "2.0"
    assert history(done) == [("1.0", "Succeeded"), ("2.0", "Succeeded")]
    eventually(lambda: models.pods_by_version() == {"2.0": 2}, "the old pods to go")
    replicasets = {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in models.replicasets()}
    assert replicasets.pop(first_rs) == 0 and list(replicasets.values()) == [2]
    reasons = models.wait_events(lambda r: r.count("RolloutSucceeded") == 2, "the events")
    assert reasons.count("RolloutStarted") == 2


@pytest.mark.parametrize(
    "bad_model",
    [
        pytest.param({"uri": CRASH_URI.format("2.0")}, id="crashloop"),
        pytest.param({"sha256": ZERO_SHA256}, id="digest-mismatch"),
    ],
)
def test_failed_rollout_is_rolled_back_and_not_retried(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess, bad_model: Obj
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    good_ref = models.model_ref()
    models.bump("demo", "2.0", **bad_model)
    stalled = models.wait_status(rolled_back, "the rollback")
    assert stalled["failedVersion"] == "2.0"
    assert "2.0" in condition(stalled, "Stalled")["message"]
    assert stalled["currentVersion"] == "1.0"
    assert condition(stalled, "Ready")["status"] == "False"
    assert stalled["history"][-1]["result"] == "RolledBack"
    assert models.model_ref() == good_ref
    eventually(lambda: models.pods_by_version() == {"1.0": 2}, "the failed pods to go")
    reasons = models.wait_events(lambda r: "RolledBack" in r, "the events")
    assert "RolloutFailed" in reasons
    # Not retried while the spec stays: several resyncs later the Deployment still runs 1.0.
    since = cluster.audit_offset()
    wait_resyncs(live_operator, 3)
    assert [w for w in operator_writes(cluster, since, namespace) if "deployments" in w] == []
    assert models.model_ref() == good_ref
    # A spec change is a new attempt.
    models.bump("demo", "3.0", sha256=None)
    recovered = models.wait_status(is_ready("3.0"), "3.0 ready")
    assert condition(recovered, "Stalled")["status"] == "False"
    assert recovered.get("failedVersion") is None


def test_without_auto_rollback_stalls_and_keeps_the_new_version(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(rollout={"autoRollback": False, "progressDeadlineSeconds": 600}))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.bump("demo", "2.0", uri=CRASH_URI.format("2.0"))
    stalled = models.wait_status(
        lambda s: condition(s, "Stalled").get("status") == "True", "Stalled"
    )
    assert condition(stalled, "Stalled")["reason"] != "RolledBack"
    assert stalled["failedVersion"] == "2.0"
    assert stalled["currentVersion"] == "1.0"
    wait_resyncs(live_operator, 2)
    deployment = models.deployment()
    assert deployment is not None
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["kubescribe.io/model-version"] == "2.0"
    assert "RolledBack" not in models.event_reasons()


def test_progress_deadline_exceeded_rolls_back(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    """Pods that never become Ready give no crash signal: only the Deployment's progress
    deadline (the real controller's) ends the rollout."""
    models = Models(cluster, namespace)
    models.create(manifest(rollout={"progressDeadlineSeconds": 10}))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.bump("demo", "2.0", uri=HOLD_URI.format("2.0"))
    models.wait_status(lambda s: s.get("phase") == "Progressing", "the rollout to start")
    stalled = models.wait_status(rolled_back, "the rollback after the deadline")
    assert stalled["failedVersion"] == "2.0"
    assert "has timed out progressing" in stalled["history"][-1]["message"]
    eventually(lambda: models.pods_by_version() == {"1.0": 2}, "the pending pods to go")


def test_a_scale_change_is_applied_without_a_rollout(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    ref = models.model_ref()
    models.patch_spec("demo", {"replicas": 3})
    done = models.wait_status(
        lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 3, "3 replicas ready"
    )
    assert done["observedGeneration"] == 2
    assert history(done) == [("1.0", "Succeeded")]  # no new rollout
    assert models.model_ref() == ref
    assert len(models.replicasets()) == 1
    assert models.event_reasons().count("RolloutStarted") == 1


def test_autoscaling_leaves_the_deployments_replicas_to_the_hpa(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    """The real HPA controller scales the Deployment (without a metrics API it keeps a count
    within min..max); the operator's field manager never owns `spec.replicas`, so a rollout
    keeps the HPA's choice."""
    models = Models(cluster, namespace)
    autoscaling = {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 70}
    models.create(manifest(replicas=None, autoscaling=autoscaling))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    hpa = models.child("HorizontalPodAutoscaler")
    assert hpa is not None and hpa["spec"]["scaleTargetRef"]["name"] == "demo"
    models.apps.patch_namespaced_deployment_scale("demo", namespace, {"spec": {"replicas": 3}})
    models.bump("demo", "2.0")
    models.wait_status(
        lambda s: is_ready("2.0")(s) and s.get("readyReplicas") == 3, "2.0 ready on 3 replicas"
    )
    deployment = models.deployment()
    assert deployment is not None and deployment["spec"]["replicas"] == 3
    for entry in deployment["metadata"]["managedFields"]:
        if entry["manager"] == "kubescribe-operator":
            assert "f:replicas" not in entry["fieldsV1"].get("f:spec", {}), entry


# ------------------------------------------------------------------------------- delete


def test_delete_removes_children_by_garbage_collection(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    before = models.children()
    for kind in ("Deployment", "ReplicaSet", "Pod", "Service", "PodDisruptionBudget"):
        assert before[kind], kind
    since = cluster.audit_offset()
    models.delete()
    models.wait_gone()  # the operator released its finalizer
    eventually(
        lambda: not any(models.children().values()), "the garbage collector to remove children"
    )
    # The garbage collector did it, not the operator.
    assert [w for w in operator_writes(cluster, since, namespace) if w.startswith("delete")] == []


# ------------------------------------------------------------------------ in the way


def test_a_foreign_object_in_the_way_stalls_until_it_is_gone(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    created = models.core.create_namespaced_service(
        namespace, {"metadata": {"name": "demo"}, "spec": {"ports": [{"port": 1}]}}
    )
    models.create(manifest())
    stalled = models.wait_status(
        lambda s: condition(s, "Stalled").get("reason") == "ChildConflict", "ChildConflict"
    )
    assert f"Service {namespace}/demo" in condition(stalled, "Stalled")["message"]
    assert condition(stalled, "Ready")["status"] == "False"
    foreign = models.child("Service")
    assert foreign is not None
    assert foreign["metadata"]["resourceVersion"] == created.metadata.resource_version  # untouched
    models.wait_events(lambda r: "ChildConflict" in r, "the Warning event")
    models.core.delete_namespaced_service("demo", namespace)
    models.wait_status(is_ready("1.0"), "ready once the name is free")


@pytest.fixture()
def no_service_monitor_crd(cluster: Cluster) -> Iterator[Callable[[], None]]:
    """The Prometheus Operator's ServiceMonitor CRD absent; calling the fixture installs a
    minimal one (it is cluster-wide: removed afterwards)."""
    cluster.kubectl("delete", "crd", SERVICE_MONITOR_CRD, "--ignore-not-found", "--wait=true")

    def install() -> None:
        cluster.install_stand_in_crd(
            "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"
        )

    yield install
    cluster.kubectl("delete", "crd", SERVICE_MONITOR_CRD, "--ignore-not-found", "--wait=false")


def test_a_missing_optional_child_is_a_warning_and_the_real_blocker_shows(
    cluster: Cluster,
    namespace: str,
    no_service_monitor_crd: Callable[[], None],
    live_operator: OperatorProcess,
) -> None:
    """Finding 22.5: no ServiceMonitor CRD: the model still serves and says so (Ready, phase
    Ready, currentVersion), with a warning condition and Event; the ServiceMonitor is retried
    with a back-off, not on every reconcile; a real blocker (a missing PriorityClass) shows."""
    models = Models(cluster, namespace)
    models.create(manifest(monitoring={"serviceMonitor": {"enabled": True}}))
    warned = models.wait_status(
        lambda s: (
            is_ready("1.0")(s)
            and condition(s, "OptionalChildrenApplied").get("reason") == "ResourceNotInstalled"
        ),
        "Ready, with the ServiceMonitor's warning",
    )
    assert condition(warned, "OptionalChildrenApplied")["status"] == "False"
    assert "monitoring.coreos.com/v1 servicemonitors" in str(warned["conditions"])
    assert condition(warned, "Stalled")["status"] == "False"
    models.wait_events(lambda r: "ResourceNotInstalled" in r, "the Warning event")
    # Back-off: fewer attempts than resyncs (each resync used to send it again).
    since = cluster.audit_offset()
    wait_resyncs(live_operator, 12)
    attempts = [
        e for e in operator_requests(cluster, since, namespace) if e.resource == "servicemonitors"
    ]
    assert len(attempts) < 12, [e.uri for e in attempts]
    # The real blocker: pods refused for a PriorityClass that does not exist.
    models.patch_spec("demo", {"scheduling": {"priorityClassName": "no-such-class"}})
    blocked = models.wait_status(
        lambda s: condition(s, "Stalled").get("reason") == "FailedCreate",
        "the missing PriorityClass in the status",
    )
    assert "no-such-class" in condition(blocked, "Stalled")["message"]
    assert condition(blocked, "Ready")["status"] == "True"  # the old pods still serve
    models.patch_spec("demo", {"scheduling": None})
    # Once the Prometheus Operator's CRD is there, the ServiceMonitor follows (after its back-off).
    no_service_monitor_crd()
    models.wait_status(
        lambda s: (
            is_ready("1.0")(s) and condition(s, "OptionalChildrenApplied").get("status") == "True"
        ),
        "the ServiceMonitor applied once the CRD is installed",
    )
    monitor = cluster.kubectl("get", "servicemonitor", "demo", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(monitor.stdout)["spec"]["endpoints"][0]["path"] == "/metrics"
