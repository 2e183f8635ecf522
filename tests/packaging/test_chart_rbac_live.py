"""The chart's RBAC allows every API call the real operator makes, in both watch modes.

The operator process runs with the arguments the chart renders against the local Kubernetes
API of the operator tests (kmock emulator + Deployment controller, tests/operator/kube), which
serves the chart's own CRDs and peering objects. A SpeechModel is created, then gets a new
version with autoscaling turned on (the PDB goes, an HPA comes), then is deleted (kopf lets it go
by removing its finalizer); then every request the operator sent (kopf's finalizer included) is
mapped to
(apiGroup, resource, verb, namespace) and must be granted by the rendered ClusterRole or by the
Role of its namespace. test_chart_rbac.py checks the other direction (nothing more is granted
than `API_USAGE`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from pkg_helpers import CHART, ROOT, by_kind, one, render_chart

sys.path.insert(0, str(ROOT / "tests" / "operator"))

from kube.deployment_controller import DeploymentController
from kube.emulator import Emulator
from kube.runner import TEST_USER_AGENT, KubeThread

# The timeout only bounds a hang (waits inside are event-driven, each bounded on its own).
pytestmark = [pytest.mark.xdist_group("operator-integration"), pytest.mark.timeout(300)]

NS = "speech"
GROUP, VERSION, PLURAL = "kubescribe.io", "v1alpha1", "speechmodels"
Call = tuple[str, str, str, str | None]  # (apiGroup, resource[/subresource], verb, namespace)


def serve_chart_crds(emulator: Emulator) -> None:
    """Declare the resources of the chart's CRDs, as the API server would after install."""
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            spec = crd["spec"]
            for version in spec["versions"]:
                emulator.register(
                    f"{spec['group']}/{version['name']}/{spec['names']['plural']}",
                    kind=spec["names"]["kind"],
                    namespaced=spec["scope"] == "Namespaced",
                    subresources=set(version.get("subresources", {})),
                )


def to_call(method: str, path: str, params: dict[str, str]) -> Call | None:
    """A resource request as RBAC sees it; None for discovery (open to every user)."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # /version, /openapi, ...
    if not rest:
        return None  # /api/v1, /apis/group/version: discovery
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    named = len(rest) >= 2
    verb = {
        "GET": "get" if named else ("watch" if params.get("watch") in ("true", "1") else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }[method]
    return group, resource, verb, namespace


def test_to_call() -> None:
    assert to_call("GET", "/apis/apps/v1/namespaces/a/deployments", {"watch": "true"}) == (
        "apps",
        "deployments",
        "watch",
        "a",
    )
    assert to_call("PATCH", "/apis/kubescribe.io/v1alpha1/namespaces/a/speechmodels/m/status", {})
    assert to_call("GET", "/api/v1/namespaces", {}) == ("", "namespaces", "list", None)
    assert to_call("GET", "/api/v1/namespaces/a", {}) == ("", "namespaces", "get", None)
    assert to_call("POST", "/api/v1/namespaces/a/events", {}) == ("", "events", "create", "a")
    assert to_call("GET", "/apis/apps/v1", {}) is None
    assert to_call("GET", "/apis", {}) is None and to_call("GET", "/api", {}) is None


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


@pytest.fixture()
def kube() -> Iterator[KubeThread]:
    with KubeThread(serve_chart_crds) as thread:
        controller = DeploymentController(thread.emulator)
        thread.spawn(controller.run)
        yield thread


def run_scenario(kube: KubeThread, objects: list[dict[str, Any]], tmp_path: Path) -> list[Call]:
    config = kubernetes.client.Configuration()
    config.host = kube.url
    client = kubernetes.client.ApiClient(config)
    client.user_agent = TEST_USER_AGENT
    custom = kubernetes.client.CustomObjectsApi(client)
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespace({"metadata": {"name": NS}})
    for peering in by_kind(objects, "ClusterKopfPeering"):
        custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    for peering in by_kind(objects, "KopfPeering"):
        namespace = peering["metadata"]["namespace"]
        custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", peering)

    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    args = [*container["args"][1:], "--liveness-port=0", "--metrics-port=0"]
    args += ["--resync-seconds=1", "--retry-backoff-seconds=0.3"]
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kubescribe_operator.process", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        model = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SpeechModel",
            "metadata": {"name": "demo", "namespace": NS},
            "spec": {"model": {"uri": "s3://models/demo/1.0", "version": "1.0"}, "replicas": 2},
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, model)
        wait_ready(kube, "1.0", log)
        bump = {
            "model": {"uri": "s3://models/demo/2.0", "version": "2.0"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 70},
        }
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "demo", {"spec": bump})
        wait_ready(kube, "2.0", log)
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "demo")
        wait_gone(kube, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
    requests = kube.call(lambda: kube.emulator.recorded())
    calls = [
        to_call(r.method.value, r.url.path, dict(r.params))
        for r in requests
        if r.headers.get("User-Agent") != TEST_USER_AGENT
    ]
    return [call for call in calls if call is not None]


def wait_ready(kube: KubeThread, version: str, log: Path) -> None:
    def ready(em: Emulator) -> bool:
        model = em.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "demo") or {}
        status = model.get("status") or {}
        return (
            status.get("phase") == "Ready"
            and status.get("currentVersion") == version
            and status.get("observedGeneration") == model["metadata"]["generation"]
            and not (status.get("kopf") or {}).get("progress")  # kopf's handlers are done
        )

    try:
        kube.wait_for(ready, what=f"model version {version} ready")
    except AssertionError:
        print(log.read_text()[-20000:])
        raise


def wait_gone(kube: KubeThread, log: Path) -> None:
    """The operator lets the SpeechModel go (kopf removes its finalizer), and the garbage
    collector takes its children."""
    try:
        kube.wait_for(
            lambda em: (
                em.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "demo") is None
                and em.get("apps/v1/deployments", NS, "demo") is None
            ),
            what="the SpeechModel and its Deployment to go",
        )
    except AssertionError:
        print(kube.call(lambda: kube.emulator.get(f"{GROUP}/{VERSION}/{PLURAL}", NS, "demo")))
        print(log.read_text()[-30000:])
        raise


@pytest.mark.parametrize(
    "values", [{}, {"watchNamespaces": [NS]}], ids=["all-namespaces", "watch-namespaces"]
)
def test_every_operator_request_is_allowed_by_the_chart_rbac(
    kube: KubeThread, values: dict[str, Any], tmp_path: Path
) -> None:
    objects = render_chart(values)[0]
    calls = run_scenario(kube, objects, tmp_path)
    verbs = {(group, resource, verb) for group, resource, verb, _ in calls}
    # The scenario exercised the operator's whole cycle, not just its start-up.
    assert {
        (GROUP, f"{PLURAL}/status", "patch"),
        (GROUP, PLURAL, "patch"),  # kopf's finalizer
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "create"),
        ("", "events", "create"),
    } <= verbs
    denied = sorted({call for call in calls if not granted(objects, call)}, key=str)
    assert not denied, f"the chart's RBAC would refuse: {denied}"
