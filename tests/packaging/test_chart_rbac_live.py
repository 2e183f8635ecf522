"""The chart's RBAC allows every API call the real operator makes, in both watch modes.

On the local control plane (tests/kube_cluster.py), whose authoriser is real RBAC: the operator
process runs with the arguments the chart renders, as the chart's ServiceAccount (a
TokenRequest token). A SpeechModel is created, then gets a new version with autoscaling turned
on (the PDB goes, an HPA comes), then is deleted (the operator lets it go by removing its
finalizer). Every request the operator sent is read back from the API server's audit log: none
was refused, and each maps to a grant of the rendered ClusterRole or of its namespace's Role.
test_chart_rbac.py checks the other direction (nothing more is granted than `API_USAGE`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import (
    CHART,
    OPERATOR_NS,
    RELEASE,
    AuditEvent,
    Cluster,
    OperatorProcess,
    eventually,
    service_account_user,
)
from pkg_helpers import by_kind, one, render_chart

pytestmark = pytest.mark.timeout(600)

Call = tuple[str, str, str, str | None]  # (apiGroup, resource[/subresource], verb, namespace)


def to_call(event: AuditEvent) -> Call:
    """A request as RBAC sees it: its group comes from the audit URI."""
    parts = [part for part in event.uri.split("?")[0].split("/") if part]
    group = parts[1] if parts[:1] == ["apis"] else ""
    return group, event.resource, event.verb, event.namespace or None


def granted(objects: list[dict[str, Any]], call: Call) -> bool:
    group, resource, verb, namespace = call
    roles = by_kind(objects, "ClusterRole")
    if namespace is not None:
        roles += [r for r in by_kind(objects, "Role") if r["metadata"]["namespace"] == namespace]
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for role in roles
        for rule in role["rules"]
    )


def test_to_call_reads_the_group_from_the_uri() -> None:
    event = AuditEvent(
        user="u", verb="patch", resource="speechmodels/status", namespace="a", name="m",
        code=200, uri="/apis/kubescribe.io/v1alpha1/namespaces/a/speechmodels/m/status?x=1",
    )  # fmt: skip
    assert to_call(event) == ("kubescribe.io", "speechmodels/status", "patch", "a")
    core = AuditEvent("u", "create", "events", "a", "", 201, "/api/v1/namespaces/a/events")
    assert to_call(core) == ("", "events", "create", "a")


def model(version: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"uri": f"s3://models/demo/{version}", "version": version},
            "runtime": {"device": "cpu"},
            "replicas": 2,
            **spec,
        },
    }


def wait_ready(cluster: Cluster, namespace: str, version: str, operator: OperatorProcess) -> None:
    def ready() -> bool:
        out = cluster.kubectl("get", "speechmodel", "demo", "-n", namespace, "-o", "json")
        obj = json.loads(out.stdout)
        status = obj.get("status") or {}
        return (
            status.get("phase") == "Ready"
            and status.get("currentVersion") == version
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    try:
        eventually(ready, f"model version {version} ready", timeout=180)
    except AssertionError:
        print(operator.logs()[-20000:])
        raise


def run_scenario(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    cluster.apply(model("1.0"), "-n", namespace)
    wait_ready(cluster, namespace, "1.0", operator)
    autoscaled = model("2.0", autoscaling={"minReplicas": 1, "maxReplicas": 3})
    cluster.apply(autoscaled, "-n", namespace)
    wait_ready(cluster, namespace, "2.0", operator)
    cluster.kubectl("delete", "speechmodel", "demo", "-n", namespace, "--timeout=120s")


@pytest.fixture()
def watched_release(cluster: Cluster, namespace: str) -> Iterator[tuple[str, str]]:
    """A release of the chart in the test's namespace that watches only that namespace."""
    name = f"ks-{uuid.uuid4().hex[:6]}"
    cluster.helm(
        "upgrade", "--install", name, str(CHART), "--namespace", namespace, "--wait",
        "--set", "replicaCount=0", "--set", f"watchNamespaces={{{namespace}}}",
    )  # fmt: skip
    yield name, namespace
    cluster.helm("uninstall", name, "--namespace", namespace, check=False)


@pytest.mark.parametrize("mode", ["all-namespaces", "watch-namespaces"])
def test_every_operator_request_is_allowed_by_the_chart_rbac(
    cluster: Cluster, namespace: str, mode: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if mode == "all-namespaces":  # the fixture's own release, in kubescribe-system
        release, release_ns = RELEASE, OPERATOR_NS
        values: dict[str, Any] = {"replicaCount": 0}
    else:
        release, release_ns = request.getfixturevalue("watched_release")
        values = {"replicaCount": 0, "watchNamespaces": [namespace]}
    objects = render_chart(values, release=release)[0]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    scope = [a for a in args[1:] if a.startswith(("--namespace", "--all-namespaces", "--peering"))]
    flags = [part for arg in scope for part in arg.split("=", 1)]
    account = pod["serviceAccountName"]
    config = cluster.token_kubeconfig(release_ns, account, tmp_path / "kubeconfig")
    operator = OperatorProcess(config, tmp_path, *flags)
    since = cluster.audit_offset()
    operator.start()
    try:
        run_scenario(cluster, namespace, operator)
    finally:
        operator.stop()
    events = cluster.audit(since, user=service_account_user(release_ns, account))
    calls = [to_call(event) for event in events if event.resource]
    refused = sorted({to_call(event) for event in events if event.code == 403}, key=str)
    assert not refused, f"the API server refused: {refused}"
    verbs = {(group, resource, verb) for group, resource, verb, _ in calls}
    # The scenario exercised the operator's whole cycle, not just its start-up.
    assert {
        ("kubescribe.io", "speechmodels/status", "patch"),
        ("kubescribe.io", "speechmodels", "patch"),  # the finalizer
        ("apps", "deployments", "patch"),  # server-side apply
        ("autoscaling", "horizontalpodautoscalers", "patch"),
        ("", "events", "create"),
    } <= verbs, sorted(verbs)
    denied = sorted({call for call in calls if not granted(objects, call)}, key=str)
    assert not denied, f"the chart's RBAC does not grant: {denied}"
