"""The real operator process against a local Kubernetes API (see DESIGN.md, "How it is tested").

Every test starts the emulator, a Deployment controller and `python -m kubescribe_operator.process`
with short timings, drives it through the synchronous kubernetes client like a user would, and
waits for the emulator's state to converge (polling with a timeout, no fixed sleeps).
"""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
from kube.deployment_controller import DeploymentController, Mode
from kube.operator_process import OperatorProcess
from kube.runner import TEST_USER_AGENT, KubeThread, eventually
from kube.scenario import (
    CHILDREN,
    GROUP,
    NS,
    PLURAL,
    SM,
    VERSION,
    acting_pids,
    add_peering,
    api_usage,
    assert_never_writes_the_spec,
    condition,
    create,
    deployment,
    deployment_patches,
    event_reasons,
    http_get,
    is_ready,
    manifest,
    metric,
    model_ref_of,
    operator_writes,
    peers,
    pods_by_version,
    status_of,
    update_spec,
    wait_resyncs,
    wait_resyncs_in,
    wait_status,
)

# The timeout only bounds a hang (waits inside are event-driven, each bounded on its own).
pytestmark = [pytest.mark.xdist_group("operator-integration"), pytest.mark.timeout(300)]


def test_create_makes_children_and_ready_status(
    kube: KubeThread, operator: OperatorProcess, custom: kubernetes.client.CustomObjectsApi
) -> None:
    create(custom, manifest())
    status = wait_status(kube, is_ready("1.0"), "the model to be ready")
    model = kube.call(lambda: kube.emulator.get(SM, NS, "demo"))
    assert model is not None
    uid = model["metadata"]["uid"]
    for resource in ("apps/v1/deployments", "v1/services", "policy/v1/poddisruptionbudgets"):
        child = kube.call(lambda r=resource: kube.emulator.get(r, NS, "demo"))
        assert child is not None, resource
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("SpeechModel", uid, True)
        ]
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        assert child["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert (
        kube.call(lambda: kube.emulator.get("autoscaling/v2/horizontalpodautoscalers", NS, "demo"))
        is None
    )
    assert status["observedGeneration"] == model["metadata"]["generation"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert status["lastKnownGood"]["version"] == "1.0"
    assert [h["result"] for h in status["history"]] == ["Succeeded"]
    assert status["endpoint"].startswith("http://demo.default.svc")
    writes = kube.call(lambda: operator_writes(kube.emulator))
    assert any(w.url.path.endswith("/demo/status") for w in writes)
    assert_never_writes_the_spec(writes)


def test_version_bump_rolls_out_to_ready(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    controller.behave("hold", when='"value":"s3://models/demo/2.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    rolling = wait_status(
        kube,
        lambda s: (
            s.get("targetVersion") == "2.0"
            and s.get("phase") == "Progressing"
            and condition(s, "Reconciling").get("status") == "True"
            and s.get("updatedReplicas") == 2
        ),
        "the rollout in progress",
    )
    assert rolling["currentVersion"] == "1.0"
    assert condition(rolling, "Ready")["status"] == "True"  # 1.0 keeps serving meanwhile
    assert kube.call(lambda: pods_by_version(kube.emulator)) == {"1.0": 2, "2.0": 2}
    controller.behave("ok", when='"value":"s3://models/demo/2.0"')
    done = wait_status(kube, is_ready("2.0"), "2.0 ready")
    assert done["lastKnownGood"]["version"] == "2.0"
    assert [(h["version"], h["result"]) for h in done["history"]] == [
        ("1.0", "Succeeded"),
        ("2.0", "Succeeded"),
    ]
    assert kube.wait_for(lambda em: pods_by_version(em) == {"2.0": 2}, what="old pods gone")
    reasons = kube.wait_for(
        lambda em: event_reasons(em).count("RolloutSucceeded") == 2 and event_reasons(em),
        what="events",
    )
    assert reasons.count("RolloutStarted") == 2


@pytest.mark.parametrize("failure", ["crashloop", "init-fail"])
def test_failed_rollout_is_rolled_back_and_not_retried(
    failure: Mode,
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    good_ref = kube.call(lambda: model_ref_of(deployment(kube.emulator)))
    controller.behave(failure, when='"value":"s3://models/demo/2.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    stalled = wait_status(
        kube,
        lambda s: (
            condition(s, "Stalled").get("status") == "True"
            and condition(s, "Stalled").get("reason") == "RolledBack"
            and s.get("phase") != "Progressing"
            and condition(s, "Reconciling").get("status") == "False"
        ),
        "the rollback",
    )
    assert stalled["failedVersion"] == "2.0"
    assert "2.0" in condition(stalled, "Stalled")["message"]
    assert stalled["currentVersion"] == "1.0"
    assert condition(stalled, "Ready")["status"] == "False"
    assert stalled["history"][-1]["result"] == "RolledBack"
    assert kube.call(lambda: model_ref_of(deployment(kube.emulator))) == good_ref
    kube.wait_for(lambda em: pods_by_version(em) == {"1.0": 2}, what="failed pods gone")
    reasons = kube.wait_for(
        lambda em: "RolledBack" in event_reasons(em) and event_reasons(em), what="events"
    )
    assert "RolloutFailed" in reasons
    # Not retried while the spec stays: several resyncs later the Deployment still runs 1.0.
    patches_before = kube.call(lambda: deployment_patches(kube.emulator))
    wait_resyncs(kube, 3)
    assert kube.call(lambda: deployment_patches(kube.emulator)) == patches_before
    assert kube.call(lambda: model_ref_of(deployment(kube.emulator))) == good_ref
    # A spec change is a new attempt.
    controller.behave("ok", when='"value":"s3://models/demo/3.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/3.0", "version": "3.0"}})
    recovered = wait_status(kube, is_ready("3.0"), "3.0 ready")
    assert condition(recovered, "Stalled")["status"] == "False"
    assert recovered.get("failedVersion") is None


def test_without_auto_rollback_stalls_and_keeps_the_new_version(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest(rollout={"autoRollback": False, "progressDeadlineSeconds": 600}))
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    controller.behave("crashloop", when='"value":"s3://models/demo/2.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    stalled = wait_status(
        kube, lambda s: condition(s, "Stalled").get("status") == "True", "Stalled"
    )
    assert condition(stalled, "Stalled")["reason"] != "RolledBack"
    assert stalled["failedVersion"] == "2.0"
    assert stalled["currentVersion"] == "1.0"
    wait_resyncs(kube, 2)
    dep = kube.call(lambda: deployment(kube.emulator))
    assert dep["spec"]["template"]["metadata"]["labels"]["kubescribe.io/model-version"] == "2.0"
    assert "RolledBack" not in kube.call(lambda: event_reasons(kube.emulator))


def test_autoscaling_never_writes_deployment_replicas(
    kube: KubeThread,
    operator: OperatorProcess,
    api: kubernetes.client.ApiClient,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    spec = {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 70}}
    create(custom, manifest(**spec))
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    hpa = kube.call(
        lambda: kube.emulator.get("autoscaling/v2/horizontalpodautoscalers", NS, "demo")
    )
    assert hpa["spec"]["scaleTargetRef"]["name"] == "demo"
    # The HPA scales the Deployment (here: the test, as the HPA controller would).
    kubernetes.client.AppsV1Api(api).patch_namespaced_deployment_scale(
        "demo", NS, {"spec": {"replicas": 3}}
    )
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    wait_status(kube, is_ready("2.0"), "2.0 ready")
    assert kube.call(lambda: deployment(kube.emulator))["spec"]["replicas"] == 3
    writes = [
        w for w in kube.call(lambda: operator_writes(kube.emulator)) if "/deployments" in w.url.path
    ]
    assert any(w.method.value == "PATCH" for w in writes)  # the rollout did patch it
    for write in writes:
        assert "replicas" not in (write.data or {}).get("spec", {}), write.data


def test_idle_resync_writes_nothing(
    kube: KubeThread, operator: OperatorProcess, custom: kubernetes.client.CustomObjectsApi
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    # kopf records the handled spec once the creation handler is done: then all is settled.
    wait_status(kube, lambda s: "lastHandledConfiguration" in s.get("kopf", {}), "kopf done")
    wait_resyncs(kube, 1)
    before = len(kube.call(lambda: operator_writes(kube.emulator)))
    wait_resyncs(kube, 4)
    after = kube.call(lambda: operator_writes(kube.emulator))
    assert len(after) == before, [(w.method.value, w.url.path, w.text) for w in after[before:]]


def test_operator_restart_mid_rollout_converges_without_duplicates(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    controller.behave("hold", when='"value":"s3://models/demo/2.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    wait_status(kube, lambda s: s.get("targetVersion") == "2.0", "the rollout to start")
    kube.wait_for(lambda em: event_reasons(em).count("RolloutStarted") == 2, what="the event")
    operator.kill()
    controller.behave("ok", when='"value":"s3://models/demo/2.0"')
    kube.wait_for(lambda em: pods_by_version(em) == {"2.0": 2}, what="the rollout to finish")
    operator.start()
    done = wait_status(kube, is_ready("2.0"), "2.0 ready after the restart")
    assert [(h["version"], h["result"]) for h in done["history"]] == [
        ("1.0", "Succeeded"),
        ("2.0", "Succeeded"),
    ]
    for resource in CHILDREN:
        objects = kube.call(lambda r=resource: kube.emulator.list(r, NS))
        assert len(objects) <= 1, resource
    assert len(kube.call(lambda: kube.emulator.list("apps/v1/deployments", NS))) == 1
    assert len(kube.call(lambda: kube.emulator.list("apps/v1/replicasets", NS))) == 2
    # Each transition was announced once, across both operator processes.
    reasons = kube.wait_for(
        lambda em: event_reasons(em).count("RolloutSucceeded") == 2 and event_reasons(em),
        what="the success event",
    )
    assert reasons.count("RolloutStarted") == 2 and reasons.count("RolloutSucceeded") == 2


def test_delete_removes_children(
    kube: KubeThread,
    operator: OperatorProcess,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "demo")
    kube.wait_for(lambda em: em.get(SM, NS, "demo") is None, what="the SpeechModel to go")
    kinds = (*CHILDREN, "apps/v1/replicasets", "v1/pods")
    kube.wait_for(lambda em: not any(em.list(r, NS) for r in kinds), what="the children to go")


def test_delete_while_a_resync_runs_releases_the_model(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    """kopf cannot interrupt a running (sync) resync timer: it removes its finalizer only once
    the timer has exited, which it checks again after `cancellation_polling` (60 s unless the
    operator sets it). A deletion that lands mid-resync must still let the model go promptly."""
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    wait_status(kube, lambda s: "lastHandledConfiguration" in s.get("kopf", {}), "kopf done")

    def reconciles(*triggers: str) -> float:
        text = http_get(operator.metrics_url)[1]
        return sum(
            metric(text, "kubescribe_operator_reconciles_total", trigger=t) for t in triggers
        )

    # No child changes any more, and every child event handled (two resyncs in a row with no
    # child-event reconcile): the next read of the SpeechModel is a resync's. Hold it there.
    controller.paused = True
    children = ("child_added", "child_modified", "child_deleted")
    mark = (reconciles("resync"), reconciles(*children))

    def quiet() -> bool:
        nonlocal mark
        now = (reconciles("resync"), reconciles(*children))
        if now[1] != mark[1]:
            mark = now
        return now[0] >= mark[0] + 2

    eventually(quiet, what="two resyncs with no child event between")
    hold = kube.call(lambda: kube.emulator.hold(method="GET", path=r"/speechmodels/demo$"))
    kube.wait_for(lambda em: hold.held > 0, what="a resync to be under way")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "demo")
    eventually(lambda: reconciles("delete") >= 1, what="the delete handler to run")
    model = kube.call(lambda: kube.emulator.get(SM, NS, "demo"))
    assert model is not None and model["metadata"]["finalizers"] == ["kubescribe.io/operator"]
    kube.call(lambda: kube.emulator.release(hold))  # the resync ends (the model is going)
    # The one bound here that is below kopf's default 60 s re-check (the defect): the model goes
    # about a second after the resync ends; 45 s is only a hang bound for that.
    kube.wait_for(
        lambda em: em.get(SM, NS, "demo") is None, timeout=45, what="the SpeechModel to go"
    )
    kube.wait_for(lambda em: em.get("apps/v1/deployments", NS, "demo") is None, what="children")


def test_api_errors_are_retried_until_converged(
    kube: KubeThread,
    operator: OperatorProcess,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    kube.call(lambda: kube.emulator.inject_fault(500, times=2, method="POST", path="/deployments$"))
    kube.call(
        lambda: kube.emulator.inject_fault(409, times=2, method="PATCH", path="/demo/status$")
    )
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready despite the errors")
    assert kube.call(kube.emulator.pending_faults) == 0
    assert len(kube.call(lambda: kube.emulator.list("apps/v1/deployments", NS))) == 1
    # A conflict on a child's patch is retried too.
    kube.call(
        lambda: kube.emulator.inject_fault(409, times=1, method="PATCH", path="/deployments/demo$")
    )
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    wait_status(kube, is_ready("2.0"), "2.0 ready despite the conflict")
    assert kube.call(kube.emulator.pending_faults) == 0
    eventually(
        lambda: (
            metric(
                http_get(operator.metrics_url)[1],
                "kubescribe_operator_reconcile_errors_total",
                error="api_409",
            )
            >= 1
        ),
        what="the 409 counted in the metrics",
    )
    # Events follow the stored status: failed status writes announced nothing twice.
    reasons = kube.wait_for(
        lambda em: event_reasons(em).count("RolloutSucceeded") == 2 and event_reasons(em),
        what="the events",
    )
    assert reasons.count("RolloutStarted") == 2 and reasons.count("RolloutSucceeded") == 2


def test_api_usage_is_what_apply_documents(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    from kubescribe_operator.apply import API_USAGE

    spec = {"autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilization": 70}}
    create(custom, manifest(**spec))
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    update_spec(custom, "demo", {"autoscaling": None, "replicas": 1})  # HPA and PDB go
    kube.wait_for(
        lambda em: (
            em.get("autoscaling/v2/horizontalpodautoscalers", NS, "demo") is None
            and em.get("policy/v1/poddisruptionbudgets", NS, "demo") is None
        ),
        what="the HPA and the PDB to be pruned",
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "demo")
    kube.wait_for(lambda em: em.get(SM, NS, "demo") is None, what="the SpeechModel to go")
    used = kube.call(lambda: api_usage(kube.emulator))
    assert_never_writes_the_spec(kube.call(lambda: operator_writes(kube.emulator)))
    # Children are watched server-side filtered, not every pod of the cluster.
    watches = [
        r
        for r in kube.call(kube.emulator.recorded)
        if r.params.get("watch") == "true" and r.resource and r.resource.plural == "pods"
    ]
    assert watches and all(
        "app.kubernetes.io/name=kubescribe" in r.params.get("labelSelector", "") for r in watches
    )
    documented = {(g, r, v) for (g, r), verbs in API_USAGE.items() for v in verbs}
    assert used <= documented, sorted(used - documented)
    # And the table is not padded: the verbs the operator writes with were all exercised.
    for needed in [
        ("apps", "deployments", "create"), ("apps", "deployments", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("policy", "poddisruptionbudgets", "delete"),
        ("kubescribe.io", "speechmodels/status", "patch"), ("", "events", "create"),
    ]:  # fmt: skip
        assert needed in used, needed


def test_two_replicas_never_both_act(
    kube: KubeThread,
    kubeconfig: Path,
    tmp_path: Path,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    kube.call(lambda: add_peering(kube.emulator))
    (tmp_path / "high").mkdir()
    (tmp_path / "low").mkdir()
    high = OperatorProcess(kubeconfig, tmp_path / "high", "--priority", "200")
    low = OperatorProcess(kubeconfig, tmp_path / "low", "--priority", "100")
    try:
        high.start()
        kube.wait_for(lambda em: peers(em) == 1, what="the first replica to join the peering")
        low.start()
        kube.wait_for(lambda em: peers(em) == 2, what="the second replica to join the peering")
        create(custom, manifest())
        wait_status(kube, is_ready("1.0"), "1.0 ready")
        assert high.proc is not None and low.proc is not None
        high_pid, low_pid = high.proc.pid, low.proc.pid
        assert kube.call(lambda: acting_pids(kube.emulator)) == {high_pid}
        # The acting replica dies: the other one takes over once its peering entry expires.
        high.kill()
        mark = kube.call(lambda: len(kube.emulator.recorded()))
        update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
        wait_status(kube, is_ready("2.0"), "2.0 ready by the remaining replica")
        assert kube.call(lambda: acting_pids(kube.emulator, mark)) == {low_pid}
    finally:
        high.kill()
        low.kill()
        print(high.logs()[-5000:], low.logs()[-5000:])


def test_progress_deadline_exceeded_rolls_back(
    kube: KubeThread,
    operator: OperatorProcess,
    controller: DeploymentController,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    # Pods that are never scheduled give no crash signal: only the deadline ends the rollout.
    create(custom, manifest(rollout={"progressDeadlineSeconds": 10}))
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    controller.behave("unschedulable", when='"value":"s3://models/demo/2.0"')
    update_spec(custom, "demo", {"model": {"uri": "s3://models/demo/2.0", "version": "2.0"}})
    wait_status(kube, lambda s: s.get("phase") == "Progressing", "the rollout to start")
    stalled = wait_status(
        kube,
        lambda s: (
            condition(s, "Stalled").get("reason") == "RolledBack"
            and condition(s, "Reconciling").get("status") == "False"
        ),
        "the rollback after the deadline",
    )
    assert stalled["failedVersion"] == "2.0"
    assert "timed out progressing" in stalled["history"][-1]["message"]
    kube.wait_for(lambda em: pods_by_version(em) == {"1.0": 2}, what="the pending pods to go")


def test_namespace_scope_ignores_other_namespaces(
    kube: KubeThread,
    kubeconfig: Path,
    tmp_path: Path,
    controller: DeploymentController,
    api: kubernetes.client.ApiClient,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team-a"}})
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kopf.dev", "v1", "team-a", "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "kubescribe"}},
    )  # fmt: skip
    # A glob: kopf resolves it by watching namespaces.
    proc = OperatorProcess(kubeconfig, tmp_path, "--namespace", "team-*")
    proc.start()
    try:
        body = manifest()
        body["metadata"]["namespace"] = "team-a"
        custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, body)
        create(custom, manifest(name="elsewhere"))
        kube.wait_for(
            lambda em: (
                (status := (em.get(SM, "team-a", "demo") or {}).get("status"))
                and status.get("phase") == "Ready"
            ),
            what="the model in team-a to be ready",
        )
        wait_resyncs_in(kube, "team-a", 2)
        assert kube.call(lambda: status_of(kube.emulator, "elsewhere")) == {}
        # Not a matter of time: SpeechModels were only ever listed and watched in team-a.
        model_reads = [
            r.url.path
            for r in kube.call(kube.emulator.recorded)
            if r.headers.get("User-Agent") != TEST_USER_AGENT
            and r.resource is not None
            and r.resource.plural == PLURAL
        ]
        assert model_reads
        team_a = f"/apis/{GROUP}/{VERSION}/namespaces/team-a/"
        assert all(path.startswith(team_a) for path in model_reads), model_reads
        assert kube.call(lambda: kube.emulator.list("apps/v1/deployments", NS)) == []
        from kubescribe_operator.apply import API_USAGE

        documented = {(g, r, v) for (g, r), verbs in API_USAGE.items() for v in verbs}
        used = kube.call(lambda: api_usage(kube.emulator))
        assert ("kopf.dev", "kopfpeerings", "patch") in used
        assert ("", "namespaces", "watch") in used  # the glob is resolved against namespaces
        assert used <= documented, sorted(used - documented)
    finally:
        proc.kill()
        print(proc.logs()[-10000:])


def test_a_foreign_object_in_the_way_stalls_until_it_is_gone(
    kube: KubeThread,
    operator: OperatorProcess,
    api: kubernetes.client.ApiClient,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    created = core.create_namespaced_service(
        NS, {"metadata": {"name": "demo"}, "spec": {"ports": [{"port": 1}]}}
    )
    create(custom, manifest())
    stalled = wait_status(
        kube, lambda s: condition(s, "Stalled").get("reason") == "ChildConflict", "ChildConflict"
    )
    assert "Service default/demo" in condition(stalled, "Stalled")["message"]
    assert condition(stalled, "Ready")["status"] == "False"
    foreign = kube.call(lambda: kube.emulator.get("v1/services", NS, "demo"))
    assert foreign["metadata"]["resourceVersion"] == created.metadata.resource_version  # untouched
    kube.wait_for(lambda em: "ChildConflict" in event_reasons(em), what="the Warning event")
    core.delete_namespaced_service("demo", NS)
    wait_status(kube, is_ready("1.0"), "ready once the name is free")


def test_service_monitor_without_its_crd_is_reported(
    kube: KubeThread, operator: OperatorProcess, custom: kubernetes.client.CustomObjectsApi
) -> None:
    create(custom, manifest(monitoring={"serviceMonitor": {"enabled": True}}))
    stalled = wait_status(
        kube,
        lambda s: condition(s, "Stalled").get("reason") == "ResourceNotInstalled",
        "ResourceNotInstalled",
    )
    assert "monitoring.coreos.com/v1 servicemonitors" in condition(stalled, "Stalled")["message"]
    # Once the Prometheus Operator's CRD is there, the model converges.
    kube.call(
        lambda: kube.emulator.register(
            "monitoring.coreos.com/v1/servicemonitors", kind="ServiceMonitor"
        )
    )
    wait_status(kube, is_ready("1.0"), "ready once the CRD is installed")
    monitor = kube.call(
        lambda: kube.emulator.get("monitoring.coreos.com/v1/servicemonitors", NS, "demo")
    )
    assert monitor is not None and monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_a_scale_change_is_applied_without_a_rollout(
    kube: KubeThread,
    operator: OperatorProcess,
    custom: kubernetes.client.CustomObjectsApi,
) -> None:
    create(custom, manifest())
    wait_status(kube, is_ready("1.0"), "1.0 ready")
    ref = kube.call(lambda: model_ref_of(deployment(kube.emulator)))
    update_spec(custom, "demo", {"replicas": 3})
    done = wait_status(
        kube, lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 3, "3 replicas ready"
    )
    assert done["observedGeneration"] == 2
    assert [h["version"] for h in done["history"]] == ["1.0"]  # no new rollout
    assert kube.call(lambda: model_ref_of(deployment(kube.emulator))) == ref
    assert kube.call(lambda: event_reasons(kube.emulator)).count("RolloutStarted") == 1
