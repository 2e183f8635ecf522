"""The real operator process against a local Kubernetes API (see DESIGN.md, "How it is tested").

Every test starts the emulator, a Deployment controller and `python -m kubescribe_operator.process`
with short timings, drives it through the synchronous kubernetes client like a user would, and
waits for the emulator's state to converge (polling with a timeout, no fixed sleeps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube.deployment_controller import DeploymentController
from kube.emulator import Emulator
from kube.operator_process import OperatorProcess
from kube.runner import TEST_USER_AGENT, KubeThread

pytestmark = [pytest.mark.xdist_group("operator-integration"), pytest.mark.timeout(120)]

NS = "default"
SM = "kubescribe.io/v1alpha1/speechmodels"
GROUP, VERSION, PLURAL = "kubescribe.io", "v1alpha1", "speechmodels"
CHILDREN = (
    "apps/v1/deployments",
    "v1/services",
    "autoscaling/v2/horizontalpodautoscalers",
    "policy/v1/poddisruptionbudgets",
)
WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")
SHA_1 = "1" * 64
SHA_2 = "2" * 64


def manifest(name: str = "demo", version: str = "1.0", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"uri": f"s3://models/demo/{version}", "version": version},
            "replicas": 2,
            "rollout": {"progressDeadlineSeconds": 600},
        },
    }
    body["spec"].update(spec)
    return body


@pytest.fixture()
def operator(
    kube: KubeThread, kubeconfig: Path, tmp_path: Path, controller: DeploymentController
) -> Iterator[OperatorProcess]:
    kube.call(lambda: _add_peering(kube.emulator))
    proc = OperatorProcess(kubeconfig, tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(proc.logs()[-20000:])  # shown by pytest when the test fails


async def _add_peering(emulator: Emulator) -> None:
    async with emulator._lock:
        await emulator.store_create(
            kubernetes_resource("kopf.dev/v1/clusterkopfpeerings"),
            None,
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "kubescribe"},
            },
        )


def kubernetes_resource(path: str) -> Any:
    import kmock

    return kmock.resource(path)


@pytest.fixture()
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def create(custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def update_spec(
    custom: kubernetes.client.CustomObjectsApi, name: str, spec: dict[str, Any]
) -> None:
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": spec})


def status_of(em: Emulator, name: str = "demo") -> dict[str, Any]:
    return (em.get(SM, NS, name) or {}).get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def wait_status(
    kube: KubeThread, check: Callable[[dict[str, Any]], bool], what: str, name: str = "demo"
) -> dict[str, Any]:
    def probe(em: Emulator) -> dict[str, Any] | None:
        status = status_of(em, name)
        return status if status and check(status) else None

    return kube.wait_for(probe, timeout=45, what=what)


def is_ready(version: str) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (
        s.get("phase") == "Ready"
        and s.get("currentVersion") == version
        and condition(s, "Ready").get("status") == "True"
        and condition(s, "Reconciling").get("status") == "False"
    )


def operator_writes(em: Emulator) -> list[Any]:
    """Write requests made by the operator (not by the test's client), kopf's peering excluded."""
    return [
        r
        for r in em.recorded()
        if r.method.value in WRITE_METHODS
        and r.headers.get("User-Agent") != TEST_USER_AGENT
        and "kopfpeerings" not in r.url.path
    ]


def deployment(em: Emulator, name: str = "demo") -> dict[str, Any]:
    return em.get("apps/v1/deployments", NS, name) or {}


def runtime_env(dep: dict[str, Any]) -> dict[str, str]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in containers[0].get("env", [])}


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
    # The operator never writes the spec: it patches /status, and kopf only adds its finalizer.
    writes = kube.call(lambda: operator_writes(kube.emulator))
    assert any(w.url.path.endswith("/demo/status") for w in writes)
    for write in writes:
        if write.url.path.endswith("/speechmodels/demo"):
            assert write.method.value == "PATCH"
            paths = {op["path"] for op in write.data if op["op"] != "test"}
            assert paths == {"/metadata/finalizers"}, write.data
        elif not write.url.path.endswith(("/events", "/status")):
            assert write.params.get("fieldManager") == "kubescribe-operator", write.url
