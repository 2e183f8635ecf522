"""Shared steps and probes of the operator's integration tests (run against KubeThread)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import kmock
import kubernetes

from .emulator import Emulator
from .runner import TEST_USER_AGENT, KubeThread, WaitTimeout

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


async def add_peering(emulator: Emulator) -> None:
    async with emulator._lock:
        await emulator.store_create(
            kmock.resource("kopf.dev/v1/clusterkopfpeerings"),
            None,
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": "kubescribe"},
            },
        )


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

    try:
        return kube.wait_for(probe, what=what)
    except WaitTimeout as exc:
        status = kube.call(lambda: status_of(kube.emulator, name))
        raise WaitTimeout(f"{exc}; status: {status}") from None


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


def assert_never_writes_the_spec(writes: list[Any]) -> None:
    """The operator patches the SpeechModel's /status; on the object itself kopf only adds and
    removes its finalizer. Children are written under the one field manager."""
    for write in writes:
        if "/speechmodels/" in write.url.path and not write.url.path.endswith("/status"):
            assert write.method.value == "PATCH"
            paths = {op["path"] for op in write.data if op["op"] != "test"}
            assert paths == {"/metadata/finalizers"}, write.data
        elif write.method.value != "DELETE" and not write.url.path.endswith(("/events", "/status")):
            assert write.params.get("fieldManager") == "kubescribe-operator", write.url


def deployment(em: Emulator, name: str = "demo") -> dict[str, Any]:
    return em.get("apps/v1/deployments", NS, name) or {}


def model_ref_of(dep: dict[str, Any]) -> str:
    return str(dep["spec"]["template"]["metadata"]["annotations"]["kubescribe.io/model-ref"])


def pods_by_version(em: Emulator, name: str = "demo") -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in em.list("v1/pods", NS):
        if pod["metadata"]["labels"].get("app.kubernetes.io/instance") == name:
            version = pod["metadata"]["labels"].get("kubescribe.io/model-version", "?")
            counts[version] = counts.get(version, 0) + 1
    return counts


def event_reasons(em: Emulator, name: str = "demo") -> list[str]:
    return [
        e["reason"]
        for e in em.list("v1/events", NS)
        if e.get("involvedObject", {}).get("name") == name
        and e.get("involvedObject", {}).get("kind") == "SpeechModel"
    ]


def deployment_patches(em: Emulator) -> int:
    return sum(
        1
        for r in operator_writes(em)
        if r.method.value == "PATCH" and r.url.path.endswith("/deployments/demo")
    )


def resync_reads(em: Emulator) -> int:
    """How often the operator has read the SpeechModel (once per reconcile)."""
    return sum(
        1
        for r in em.recorded()
        if r.method.value == "GET"
        and r.url.path.endswith("/speechmodels/demo")
        and r.headers.get("User-Agent") != TEST_USER_AGENT
    )


def wait_resyncs(kube: KubeThread, count: int) -> None:
    start = kube.call(lambda: resync_reads(kube.emulator))
    kube.wait_for(lambda em: resync_reads(em) >= start + count, what=f"{count} reconciles")


def api_usage(em: Emulator) -> set[tuple[str, str, str]]:
    """(group, resource[/subresource], verb) of every request the operator process made."""
    used = set()
    for r in em.recorded():
        if r.headers.get("User-Agent") == TEST_USER_AGENT or r.resource is None:
            continue
        if r.resource.plural is None:
            continue  # discovery (/api, /apis/GROUP/VERSION)
        plural = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        method = r.method.value
        if method == "GET":
            verb = "watch" if r.params.get("watch") == "true" else "get" if r.name else "list"
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]
        used.add((r.resource.group or "", plural, verb))
    return used


def peers(em: Emulator) -> int:
    peering = em.get("kopf.dev/v1/clusterkopfpeerings", None, "kubescribe") or {}
    return len(peering.get("status") or {})


def acting_pids(em: Emulator, since: int = 0) -> set[int]:
    """The pids of the operator processes that reconciled (their client made any request,
    reads included) after request number ``since``."""
    pids = set()
    for r in em.recorded()[since:]:
        agent = r.headers.get("User-Agent", "")
        if agent.startswith("kubescribe-operator ("):
            pids.add(int(agent.rstrip(")").rsplit("/", 1)[1]))
    return pids


def wait_resyncs_in(kube: KubeThread, namespace: str, count: int) -> None:
    def reads(em: Emulator) -> int:
        return sum(
            1
            for r in em.recorded()
            if r.method.value == "GET"
            and r.url.path.endswith(f"/namespaces/{namespace}/speechmodels/demo")
            and r.headers.get("User-Agent") != TEST_USER_AGENT
        )

    start = kube.call(lambda: reads(kube.emulator))
    kube.wait_for(lambda em: reads(em) >= start + count, what=f"{count} reconciles")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except OSError:  # refused, reset, timed out (URLError is one): not up yet, or too slow
        return 0, ""


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
