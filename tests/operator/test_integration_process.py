"""The real operator as a process on the real local control plane: killed mid-rollout, two
replicas, one namespace only, errors and stalls from the API server, the API it uses.

Like test_integration.py: a namespace per test, the real operator as the chart's
ServiceAccount (`live_operator`, or processes of the test's own), the audit log. Errors come
from the real API server on cue through an admission webhook (`webhook.FaultWebhook`).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
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
from kubescribe_operator import process
from kubescribe_operator.apply import API_USAGE
from live import (
    HOLD_URI,
    Models,
    acting_pids,
    history,
    is_ready,
    manifest,
    metric,
    operator_requests,
    reconciles,
    rolling_to,
    wait_resyncs,
)
from webhook import FaultWebhook

# The timeout only bounds a hang (every wait inside is bounded on its own).
pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def faults(cluster: Cluster, namespace: str) -> Iterator[FaultWebhook]:
    with FaultWebhook(cluster, namespace) as webhook:
        yield webhook


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
    eventually(
        lambda: models.pods_by_version() == {"2.0": 2},
        lambda: f"the rollout to finish: {models.rollout_state()}",
    )
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
    assert reasons.count("RolloutStarted") == 2, models.event_log()
    assert reasons.count("RolloutSucceeded") == 2, models.event_log()


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


def test_a_replacement_replica_acts_without_waiting_for_the_crashed_one(
    cluster: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """Issue 22.12: a single replica killed and replaced (a new pod) acts at once. Both use the
    default priority and a peering lifetime far longer than any wait here: had the crashed one
    ranked higher (a random priority did, half the time), the new one would pause until its
    entry expired."""
    models = Models(cluster, namespace)
    lifetime = ("--peering-lifetime", "3600")
    crashed = OperatorProcess(operator_kubeconfig, tmp_path / "crashed", *lifetime)
    replacement = OperatorProcess(operator_kubeconfig, tmp_path / "new", *lifetime)
    for replica in (crashed, replacement):
        replica.log_dir.mkdir()
    try:
        before = set(_entries(cluster))
        crashed.start()
        eventually(lambda: set(_entries(cluster)) - before, "the first replica's peering entry")
        crashed.kill()  # its entry stays in the peering, alive for an hour
        replacement.start()
        models.create(manifest())
        models.wait_status(is_ready("1.0"), "1.0 ready by the replacement")
        assert "Pausing operations" not in replacement.logs(), replacement.logs()[-3000:]
    finally:
        cluster.kubectl(
            "delete", "speechmodels", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        replacement.kill()
        crashed.kill()


def test_default_priority_grows_with_the_start_time() -> None:
    first = process.default_priority()
    eventually(lambda: process.default_priority() > first, "a later start")


@pytest.fixture()
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"elsewhere-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(name)
    yield name
    # Its model goes first (nothing gave it a finalizer): left in the terminating namespace, a
    # later test's cluster-wide operator would take it up and be refused every create there.
    cluster.kubectl("delete", "speechmodels", "--all", "-n", name, "--timeout=60s", check=False)
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


# ---------------------------------------------------------------------------- API errors


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
    assert reasons.count("RolloutStarted") == 2, models.event_log()
    assert reasons.count("RolloutSucceeded") == 2, models.event_log()


# ------------------------------------------------------------------------- deletion


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
