"""The real operator on the real local control plane (DESIGN.md, "How it is tested").

Each test has a namespace of its own and the real operator process: `live_operator` (the
chart's ServiceAccount, every namespace, a resync every 2 s) or processes of its own. The real
Deployment, ReplicaSet, HPA and garbage-collector controllers and KWOK's fake nodes do the rest;
pods become Ready at once, or stay Pending or crash-loop on cue (`live.HOLD_URI`, `CRASH_URI`,
`ZERO_SHA256`). The API server's audit log says what the operator asked of it. Waits poll with
timeouts that only bound a hang.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from kube_cluster import (
    CHART,
    GROUP,
    OPERATOR_NS,
    PLURAL,
    RELEASE,
    VERSION,
    AuditEvent,
    Cluster,
    OperatorProcess,
    eventually,
)
from kubescribe_operator.apply import API_USAGE
from live import (
    CRASH_URI,
    HOLD_URI,
    TEST_MANAGER,
    ZERO_SHA256,
    Models,
    acting_pids,
    condition,
    is_ready,
    manifest,
    metric,
    operator_requests,
    operator_writes,
    reconciles,
    wait_resyncs,
)
from webhook import FaultWebhook

Obj = dict[str, Any]
# The timeout only bounds a hang (every wait inside is bounded on its own).
pytestmark = pytest.mark.timeout(300)

OWNED_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"


def rolling_to(version: str, updated: int) -> Callable[[Obj], bool]:
    return lambda s: (
        s.get("targetVersion") == version
        and s.get("phase") == "Progressing"
        and condition(s, "Reconciling").get("status") == "True"
        and s.get("updatedReplicas") == updated
    )


def rolled_back(s: Obj) -> bool:
    return (
        condition(s, "Stalled").get("status") == "True"
        and condition(s, "Stalled").get("reason") == "RolledBack"
        and condition(s, "Reconciling").get("status") == "False"
        and s.get("phase") != "Progressing"
    )


def history(status: Obj) -> list[tuple[str, str]]:
    return [(h["version"], h["result"]) for h in status["history"]]


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


def test_delete_while_a_resync_runs_releases_the_model(
    cluster: Cluster, namespace: str, faults: FaultWebhook, live_operator: OperatorProcess
) -> None:
    """A deletion that lands while a resync is under way (its status write held by the
    webhook): kopf does not interrupt the resync and keeps its finalizer until the resync has
    ended; then the model goes (the resync sees the deletion and writes nothing more)."""
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.wait_status(lambda s: "lastHandledConfiguration" in s.get("kopf", {}), "kopf done")
    # Only a resync notices a status edited by someone else (no handler or child event fires):
    # it writes the status back, and the webhook holds that write.
    held = faults.hold("UPDATE", "speechmodels/status")
    cluster.kubectl(
        "patch", "speechmodel", "demo", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Pending"}}',
    )  # fmt: skip
    eventually(lambda: held.hits == 1, "a resync to be under way")
    models.delete()
    eventually(lambda: reconciles(live_operator, "delete") >= 1, "the delete handler to run")
    model = models.get()
    assert model is not None and model["metadata"]["finalizers"] == ["kubescribe.io/operator"]
    held.released.set()  # the resync ends
    models.wait_gone()
    eventually(lambda: not any(models.children().values()), "the children to go")


# ------------------------------------------------------------------ crashes and replicas


def test_operator_killed_mid_rollout_converges_without_duplicates(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(rollout={"maxSurge": "100%", "progressDeadlineSeconds": 600}))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.bump("demo", "2.0", uri=HOLD_URI.format("2.0"))
    models.wait_status(rolling_to("2.0", updated=2), "the rollout in progress")
    models.wait_events(lambda r: r.count("RolloutStarted") == 2, "the rollout's event")
    live_operator.kill()  # SIGKILL: no goodbye
    models.release_held_pods()
    eventually(lambda: models.pods_by_version() == {"2.0": 2}, "the rollout to finish")
    live_operator.start()
    done = models.wait_status(is_ready("2.0"), "2.0 ready after the restart")
    assert history(done) == [("1.0", "Succeeded"), ("2.0", "Succeeded")]
    children = models.children()
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        assert children[kind] == ["demo"], kind
    assert children["HorizontalPodAutoscaler"] == []
    assert len(children["ReplicaSet"]) == 2
    # Each transition was announced once, across both operator processes.
    models.wait_events(lambda r: r.count("RolloutSucceeded") == 2, "the success event")
    wait_resyncs(live_operator, 2)
    reasons = models.event_reasons()
    assert reasons.count("RolloutStarted") == 2 and reasons.count("RolloutSucceeded") == 2


def _entries(cluster: Cluster) -> dict[str, Any]:
    """The replicas in the chart's cluster-wide kopf peering (priority per replica)."""
    out = cluster.kubectl("get", "clusterkopfpeering", "kubescribe", "-o", "yaml").stdout
    return dict(yaml.safe_load(out).get("status") or {})


def test_two_replicas_never_both_act(
    cluster: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """Both replicas run as the chart's ServiceAccount; the audit log tells them apart by the
    user agent the operator's client sends (its process id)."""
    models = Models(cluster, namespace)
    high = OperatorProcess(operator_kubeconfig, tmp_path / "high", "--priority", "200")
    low = OperatorProcess(operator_kubeconfig, tmp_path / "low", "--priority", "100")
    for replica in (high, low):
        replica.log_dir.mkdir()
    try:
        high.start()
        low.start()
        eventually(
            lambda: {200, 100} <= {e.get("priority") for e in _entries(cluster).values()},
            "both replicas in the peering",
        )
        since = cluster.audit_offset()
        models.create(manifest())
        models.wait_status(is_ready("1.0"), "1.0 ready")
        assert high.proc is not None and low.proc is not None
        high_pid, low_pid = high.proc.pid, low.proc.pid
        assert acting_pids(cluster, since, namespace) == {high_pid}
        # The acting replica dies: the other one takes over once its peering entry expires.
        high.kill()
        since = cluster.audit_offset()
        models.bump("demo", "2.0")
        models.wait_status(is_ready("2.0"), "2.0 ready by the remaining replica")
        assert acting_pids(cluster, since, namespace) == {low_pid}
    finally:
        cluster.kubectl(
            "delete", "speechmodels", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        high.kill()
        low.kill()
        print(high.logs()[-5000:], low.logs()[-5000:])


@pytest.fixture()
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"elsewhere-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def watch_namespace(cluster: Cluster, namespace: str) -> None:
    """What the chart adds for a namespace in `watchNamespaces`: the Role (with kopfpeerings),
    its RoleBinding to the operator's ServiceAccount, the namespaced peering object."""
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    rendered = cluster.helm(
        "template", RELEASE, str(CHART), "--namespace", OPERATOR_NS,
        "--kube-version", server["gitVersion"], "--set", f"watchNamespaces={{{namespace}}}",
        "--show-only", "templates/rbac.yaml", "--show-only", "templates/peering.yaml",
    ).stdout  # fmt: skip
    wanted = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("metadata", {}).get("namespace") == namespace
    ]
    assert {doc["kind"] for doc in wanted} == {"Role", "RoleBinding", "KopfPeering"}
    cluster.apply(yaml.safe_dump_all(wanted))


def stop_and_audit(
    cluster: Cluster, proc: OperatorProcess, since: int, watched: str
) -> list[AuditEvent]:
    """The operator's requests since ``since``, its watches included: the API server logs a
    watch when it ends, so the process is stopped first (SIGKILL: its connections close), and
    the log read once it has the watch of ``watched`` (a resource)."""
    proc.kill()
    return eventually(
        lambda: (
            (r := operator_requests(cluster, since))
            and any(e.verb == "watch" and e.resource == watched for e in r)
            and r
        ),
        f"the operator's watch of {watched} in the audit log",
    )


def test_namespace_scope_ignores_other_namespaces(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    watch_namespace(cluster, namespace)
    since = cluster.audit_offset()
    # A glob: kopf resolves it by watching namespaces.
    proc = OperatorProcess(operator_kubeconfig, tmp_path, "--namespace", f"{namespace}*")
    proc.start()
    here, there = Models(cluster, namespace), Models(cluster, other_namespace)
    try:
        there.create(manifest())
        here.create(manifest())
        here.wait_status(is_ready("1.0"), "the model in the watched namespace ready")
        wait_resyncs(proc, 2)
        here.delete()
        here.wait_gone()
        requests = stop_and_audit(cluster, proc, since, watched="namespaces")
        assert there.status() == {}
        assert not any(there.children().values())
        # Not a matter of time: SpeechModels were only ever listed and watched in that namespace.
        model_requests = [e.uri for e in requests if e.resource.startswith(PLURAL)]
        assert model_requests
        prefix = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
        assert all(uri.startswith(prefix) for uri in model_requests), model_requests
        used = api_usage(requests)
        assert ("kopf.dev", "kopfpeerings", "patch") in used
        assert ("", "namespaces", "watch") in used  # the glob is resolved against namespaces
        assert used <= documented_usage(), sorted(used - documented_usage())
    finally:
        proc.kill()
        # No operator has put its finalizer on the model there: it goes at once.
        cluster.kubectl("delete", "speechmodels", "--all", "-n", other_namespace, check=False)
        print(proc.logs()[-10000:])


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
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": SERVICE_MONITOR_CRD},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {
                "plural": "servicemonitors",
                "singular": "servicemonitor",
                "kind": "ServiceMonitor",
                "listKind": "ServiceMonitorList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }

    def install() -> None:
        cluster.apply(crd)
        cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{SERVICE_MONITOR_CRD}", "--timeout=60s"
        )

    yield install
    cluster.kubectl("delete", "crd", SERVICE_MONITOR_CRD, "--ignore-not-found", "--wait=false")


def test_service_monitor_without_its_crd_is_reported(
    cluster: Cluster,
    namespace: str,
    no_service_monitor_crd: Callable[[], None],
    live_operator: OperatorProcess,
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(monitoring={"serviceMonitor": {"enabled": True}}))
    stalled = models.wait_status(
        lambda s: condition(s, "Stalled").get("reason") == "ResourceNotInstalled",
        "ResourceNotInstalled",
    )
    assert "monitoring.coreos.com/v1 servicemonitors" in condition(stalled, "Stalled")["message"]
    # Once the Prometheus Operator's CRD is there, the model converges.
    no_service_monitor_crd()
    models.wait_status(is_ready("1.0"), "ready once the CRD is installed")
    monitor = cluster.kubectl("get", "servicemonitor", "demo", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(monitor.stdout)["spec"]["endpoints"][0]["path"] == "/metrics"


# ---------------------------------------------------------------------------- API errors


@pytest.fixture()
def faults(cluster: Cluster, namespace: str) -> Iterator[FaultWebhook]:
    with FaultWebhook(cluster, namespace) as webhook:
        yield webhook


def test_api_errors_are_retried_until_converged(
    cluster: Cluster, namespace: str, faults: FaultWebhook, live_operator: OperatorProcess
) -> None:
    """The API server answers the operator 500 and 409 (an admission webhook's refusal, passed
    on as the API server's own answer): each is retried, and nothing is announced twice."""
    models = Models(cluster, namespace)
    since = cluster.audit_offset()
    faults.inject("CREATE", "deployments", 500, times=2)
    faults.inject("UPDATE", "speechmodels/status", 409, times=2)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready despite the errors")
    assert faults.pending() == 0
    assert models.children()["Deployment"] == ["demo"]
    # A conflict on a child's apply is retried too.
    faults.inject("UPDATE", "deployments", 409)
    models.bump("demo", "2.0")
    models.wait_status(is_ready("2.0"), "2.0 ready despite the conflict")
    assert faults.pending() == 0
    refused = [e for e in operator_requests(cluster, since, namespace) if e.code >= 400]
    assert Counter((e.verb, e.resource, e.code) for e in refused) == {
        ("create", "deployments", 500): 2,
        ("patch", "speechmodels/status", 409): 2,
        ("patch", "deployments", 409): 1,
    }
    # Each refusal of a request of the operator's own client is counted once, whichever trigger
    # met it (kopf's own writes of its bookkeeping in status.kopf are kopf's to retry).
    ours = [e for e in refused if e.user_agent.startswith("kubescribe-operator (")]
    errors = metric(live_operator.metrics(), "kubescribe_operator_reconcile_errors_total")
    assert errors == len(ours) >= 3
    # Events follow the stored status: failed status writes announced nothing twice.
    models.wait_events(lambda r: r.count("RolloutSucceeded") == 2, "the events")
    wait_resyncs(live_operator, 2)
    reasons = models.event_reasons()
    assert reasons.count("RolloutStarted") == 2 and reasons.count("RolloutSucceeded") == 2


# ---------------------------------------------------------------------------- API usage


def api_usage(requests: list[AuditEvent]) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) of the operator's requests (discovery, which
    names no resource, aside)."""
    return {(e.group, e.resource, e.verb) for e in requests if e.resource}


def documented_usage() -> set[tuple[str, str, str]]:
    return {(g, r, v) for (g, r), verbs in API_USAGE.items() for v in verbs}


def test_api_usage_is_what_apply_documents(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    since = cluster.audit_offset()
    models = Models(cluster, namespace)
    autoscaling = {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilization": 70}
    models.create(manifest(replicas=None, autoscaling=autoscaling))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.patch_spec("demo", {"autoscaling": None, "replicas": 1})  # HPA and PDB go
    eventually(
        lambda: (
            models.child("HorizontalPodAutoscaler") is None
            and models.child("PodDisruptionBudget") is None
        ),
        "the HPA and the PDB to be pruned",
    )
    models.delete()
    models.wait_gone()
    # Its requests for this test: in this namespace, or cluster-wide (peering, discovery).
    requests = [
        e
        for e in stop_and_audit(cluster, live_operator, since, watched="pods")
        if e.namespace in ("", namespace)
    ]
    assert [e for e in requests if e.code == 403] == []
    used = api_usage(requests)
    assert used <= documented_usage(), sorted(used - documented_usage())
    # And the table is not padded: the verbs the operator writes with were all exercised.
    for needed in [
        ("apps", "deployments", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("policy", "poddisruptionbudgets", "delete"),
        (GROUP, "speechmodels/status", "patch"), ("", "events", "create"),
    ]:  # fmt: skip
        assert needed in used, needed
    # Children are watched filtered by the server, not every pod of the cluster.
    pod_watches = [e.uri for e in requests if e.resource == "pods" and e.verb == "watch"]
    assert pod_watches
    for uri in pod_watches:
        selector = parse_qs(urlsplit(uri).query).get("labelSelector", [""])[0]
        assert "app.kubernetes.io/name=kubescribe" in selector, uri
