"""The chart's RBAC both ways, read from the real API server's audit log (issue 10.4).

test_chart_rbac_live.py shows every request the operator makes is granted. Here:

- the other way: over a representative workload (create with a ServiceMonitor, a rollout,
  autoscaling on and off, the ServiceMonitor off, delete) the operator, running as the chart's
  ServiceAccount, is refused nothing, and every (apiGroup, resource, verb) the chart's
  ClusterRole grants was used, or `UNUSED` names why the grant stays;
- a namespace-scoped install (a second release with its own name, namespace and peering name,
  `watchNamespaces` one namespace) cannot see beyond it: its account may not read other
  namespaces, its operator never asks for anything in them or cluster-wide beyond what kopf's
  scanning needs, and a SpeechModel elsewhere is ignored (no status, no children).

tests/conftest.py adds the session-wide check: no request of the chart's ServiceAccount got a
403 in the whole run. Watches are logged when they end, so each operator here is stopped before
its requests are read.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import (
    OPERATOR_SA,
    OPERATOR_USER,
    RELEASE,
    AuditEvent,
    Cluster,
    OperatorProcess,
    eventually,
    service_account_user,
)
from pkg_helpers import ROOT, one, render_chart

sys.path.insert(0, str(ROOT / "tests" / "operator"))
from live import Models, condition, is_ready, manifest, wait_resyncs

pytestmark = pytest.mark.timeout(600)  # only bounds a hang

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
SERVICE_MONITOR_CRD = "servicemonitors.monitoring.coreos.com"

# Grants of the all-namespaces ClusterRole the workload does not use, and why each stays. The
# table must match exactly: a grant that becomes used, or is dropped, leaves it.
NO_GET = (
    "no GET is ever sent: the operator reads from kopf's watch caches and applies with PATCH, "
    "kopf itself only lists, watches and patches; listed in apply.API_USAGE, from which the "
    "chart's rules are derived (test_chart_rbac.py), so it goes from both or neither"
)
NEVER_PRUNED = (
    "apply.py prunes (deletes) a child of a kind the SpeechModel no longer needs; a Deployment "
    "and a Service are always needed, so only the garbage collector deletes them (with the "
    "SpeechModel); API_USAGE grants delete on every child kind alike"
)
UNUSED: dict[Grant, str] = {
    ("kubescribe.io", "speechmodels", "get"): NO_GET,
    ("apps", "deployments", "get"): NO_GET,
    ("", "services", "get"): NO_GET,
    ("autoscaling", "horizontalpodautoscalers", "get"): NO_GET,
    ("policy", "poddisruptionbudgets", "get"): NO_GET,
    ("monitoring.coreos.com", "servicemonitors", "get"): NO_GET,
    ("kopf.dev", "clusterkopfpeerings", "get"): NO_GET,
    ("apps", "deployments", "delete"): NEVER_PRUNED,
    ("", "services", "delete"): NEVER_PRUNED,
    ("kubescribe.io", "speechmodels/finalizers", "update"): (
        "never a request: OwnerReferencesPermissionEnforcement checks it when a child with "
        "blockOwnerDeletion is created (test_chart_live.py shows the create refused without it)"
    ),
    ("", "namespaces", "list"): (
        "used by a namespace-scoped install: kopf follows the namespaces it serves by name "
        "(test_a_namespace_scoped_install_cannot_see_other_namespaces checks it does)"
    ),
    ("", "namespaces", "watch"): "as namespaces list",
    ("gateway.networking.k8s.io", "httproutes", "get"): NO_GET,
    ("", "configmaps", "create"): (
        "the catalogue is server-side applied (PATCH); the API server checks create when the "
        "apply makes the ConfigMap, the audit log names only the patch"
    ),
    ("", "configmaps", "delete"): (
        "never a request: OwnerReferencesPermissionEnforcement checks it when a second routed "
        "model adds its ownerReference to the namespace's catalogue (routing.py)"
    ),
}


def grants(role: dict[str, Any]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def used(events: list[AuditEvent]) -> set[Grant]:
    """What the requests needed (discovery, which names no resource, aside)."""
    return {(e.group, e.resource, e.verb) for e in events if e.resource}


@pytest.fixture()
def service_monitor_crd(cluster: Cluster) -> Iterator[None]:
    """The Prometheus Operator's ServiceMonitor CRD (a minimal one) if the cluster lacks it."""
    present = cluster.kubectl("get", "crd", SERVICE_MONITOR_CRD, check=False).returncode == 0
    if not present:
        cluster.install_stand_in_crd(
            "monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"
        )
    yield
    if not present:
        cluster.kubectl("delete", "crd", SERVICE_MONITOR_CRD, "--ignore-not-found", "--wait=false")


@pytest.fixture()
def gateway_api_crds(cluster: Cluster) -> None:
    """Gateway API's CRDs (cluster/gateway_api.py; left installed, as the gateway tests do)."""
    import gateway_api

    gateway_api.install(lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout)


def workload(models: Models) -> None:
    """A SpeechModel's life: every kind of child made, changed and let go."""
    monitored = {"serviceMonitor": {"enabled": True}}
    # Routed through a Gateway that does not exist (the operator looks it up).
    routing = {"parentRefs": [{"name": "speech"}]}
    models.create(manifest(monitoring=monitored, routing=routing))
    models.wait_status(is_ready("1.0"), "1.0 ready")
    eventually(lambda: _has(models, "servicemonitor"), "the ServiceMonitor")
    eventually(lambda: _has(models, "httproute"), "the HTTPRoute")
    models.wait_status(
        lambda s: condition(s, "Routed").get("reason") == "GatewayNotFound", "Gateway looked up"
    )
    models.bump("demo", "2.0")
    models.wait_status(is_ready("2.0"), "2.0 rolled out")
    models.patch_spec(
        "demo", {"replicas": None, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
    )
    eventually(lambda: models.child("HorizontalPodAutoscaler"), "the HPA")
    # One fixed replica: no HPA, no PodDisruptionBudget; and no ServiceMonitor.
    unmonitored = {"serviceMonitor": {"enabled": False}}
    models.patch_spec(
        "demo",
        {"autoscaling": None, "replicas": 1, "monitoring": unmonitored, "routing": None},
    )
    eventually(lambda: not _has(models, "httproute"), "the HTTPRoute to go")
    eventually(lambda: models.child("HorizontalPodAutoscaler") is None, "the HPA to go")
    eventually(lambda: models.child("PodDisruptionBudget") is None, "the PDB to go")
    eventually(lambda: not _has(models, "servicemonitor"), "the ServiceMonitor to go")
    models.wait_status(
        lambda s: is_ready("2.0")(s) and s.get("readyReplicas") == 1, "2.0 on 1 fixed replica"
    )
    models.delete()
    models.wait_gone()


def _has(models: Models, kind: str) -> bool:
    out = models.cluster.kubectl("get", kind, "demo", "-n", models.ns, check=False)
    return out.returncode == 0


def test_every_grant_of_the_chart_is_used_and_none_is_refused(
    cluster: Cluster,
    namespace: str,
    service_monitor_crd: None,
    gateway_api_crds: None,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """The fixture's release (all namespaces, kubescribe-system), its ServiceAccount."""
    role = one(render_chart({"replicaCount": 0}, release=RELEASE)[0], "ClusterRole")
    since = cluster.audit_offset()
    operator = OperatorProcess(operator_kubeconfig, tmp_path)
    operator.start()
    try:
        workload(Models(cluster, namespace))
    finally:
        operator.stop()
        print(operator.logs()[-10000:])
    events = _after_watches_end(cluster, since, OPERATOR_USER)
    refused = sorted({(e.verb, e.uri) for e in events if e.code == 403})
    assert refused == []
    needed, granted = used(events), grants(role)
    assert needed <= granted, sorted(needed - granted)
    unused = granted - needed
    print("unused grants:", sorted(unused))
    assert {g: UNUSED.get(g, "NOT EXPLAINED") for g in unused} == UNUSED


# ------------------------------------------------------------------ a namespace-scoped install


@pytest.fixture()
def scoped_release(cluster: Cluster, namespace: str) -> Iterator[tuple[str, str, str]]:
    """A second release, in a namespace of its own, watching only the test's namespace, with
    a peering name of its own: (release, its namespace, peering name)."""
    name = f"scoped-{uuid.uuid4().hex[:5]}"
    release_ns = f"{name}-system"
    peering = f"{name}-peering"
    cluster.install_chart(
        name, release_ns,
        "--set", "replicaCount=0",
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", f"peering.name={peering}",
    )  # fmt: skip
    yield name, release_ns, peering
    cluster.helm("uninstall", name, "--namespace", release_ns, "--wait", check=False)
    cluster.kubectl("delete", "namespace", release_ns, "--wait=false", check=False)


@pytest.fixture()
def elsewhere(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"{namespace[:50]}-else"
    cluster.create_namespace(name)
    yield name
    # Its model goes first, at once (no operator watching there gave it a finalizer): left in
    # the terminating namespace, a later test's cluster-wide operator would take it up and be
    # refused every create there (403: the namespace is being terminated).
    cluster.kubectl("delete", "speechmodels", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_namespace_scoped_install_cannot_see_other_namespaces(
    cluster: Cluster,
    namespace: str,
    scoped_release: tuple[str, str, str],
    elsewhere: str,
    tmp_path: Path,
) -> None:
    release, release_ns, peering = scoped_release
    values = {"replicaCount": 0, "watchNamespaces": [namespace], "peering": {"name": peering}}
    objects = render_chart(values, release=release)[0]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    account = pod["serviceAccountName"]
    assert account != OPERATOR_SA
    user = service_account_user(release_ns, account)
    # What its account may do, as the real authoriser answers (no request is refused by it).
    for verb, resource, where in [
        ("list", "speechmodels.kubescribe.io", elsewhere),
        ("watch", "deployments.apps", elsewhere),
        ("patch", "speechmodels.kubescribe.io", elsewhere),
        ("list", "pods", elsewhere),
        ("list", "speechmodels.kubescribe.io", "--all-namespaces"),
        ("patch", "clusterkopfpeerings.kopf.dev", ""),
    ]:
        scope = (
            ["--all-namespaces"] if where == "--all-namespaces" else ["-n", where] if where else []
        )
        answer = cluster.kubectl(
            "auth", "can-i", verb, resource, *scope, f"--as={user}", check=False
        )
        assert answer.stdout.strip() == "no", (verb, resource, where)
    allowed = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "speechmodels.kubescribe.io/status",
        "-n",
        namespace,
        f"--as={user}",
        check=False,
    )
    assert allowed.stdout.strip() == "yes"

    args = pod["containers"][0]["args"]
    flags = [
        p for a in args[1:] if a.startswith(("--namespace", "--peering")) for p in a.split("=", 1)
    ]
    assert f"--peering={peering}" in args
    config = cluster.token_kubeconfig(release_ns, account, tmp_path / "kubeconfig")
    operator = OperatorProcess(config, tmp_path, *flags)
    here, there = Models(cluster, namespace), Models(cluster, elsewhere)
    since = cluster.audit_offset()
    operator.start()
    try:
        there.create(manifest())
        here.create(manifest())
        here.wait_status(is_ready("1.0"), "the model in the watched namespace ready")
        wait_resyncs(operator, 3)
        assert there.status() == {}
        assert not any(there.children().values())
        assert (there.get() or {})["metadata"].get("finalizers") in (None, [])
        here.delete()
        here.wait_gone()
    finally:
        operator.stop()
        print(operator.logs()[-10000:])
    events = _after_watches_end(cluster, since, user)
    assert events
    assert [e for e in events if e.code == 403] == []
    outside = sorted({(e.verb, e.uri) for e in events if e.namespace not in ("", namespace)})
    assert outside == []
    cluster_wide = {(e.group, e.resource, e.verb) for e in events if e.resource and not e.namespace}
    assert {("", "namespaces", "list"), ("", "namespaces", "watch")} <= cluster_wide  # UNUSED
    # kopf's scanning only: which CRDs exist, and the namespaces it serves.
    assert cluster_wide <= {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }, sorted(cluster_wide)
    # Its own peering object, not the fixture release's cluster-wide one.
    peerings = {
        (e.resource, e.namespace, e.name)
        for e in events
        if "kopfpeerings" in e.resource and e.verb == "patch"
    }
    assert peerings == {("kopfpeerings", namespace, peering)}, peerings
    # And the model elsewhere was left to whoever watches there (condition: none).
    assert condition(there.status(), "Ready") == {}


def _after_watches_end(cluster: Cluster, since: int, user: str) -> list[AuditEvent]:
    """The user's requests since ``since``, once the API server has logged the watches the
    stopped operator held (a watch is logged when it ends): when two reads a second apart
    agree and show watches."""
    seen: list[int] = []

    def settled() -> list[AuditEvent] | None:
        events = cluster.audit(since, user=user)
        seen.append(len(events))
        stable = len(seen) > 1 and seen[-2] == seen[-1]
        return events if stable and any(e.verb == "watch" for e in events) else None

    return eventually(settled, "the operator's watches in the audit log", timeout=30, every=1)
