"""The local Kubernetes API behaves like an API server where the operator relies on it."""

from __future__ import annotations

import json
import threading
from typing import Any

import kubernetes
import pytest
from kube.deployment_controller import DeploymentController
from kube.emulator import Emulator
from kube.runner import WAIT_TIMEOUT, KubeThread
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.xdist_group("operator-integration")

SM = ("kubescribe.io", "v1alpha1", "speechmodels")


def _custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


def _raw(
    api: kubernetes.client.ApiClient, method: str, path: str, body: Any, content_type: str
) -> Any:
    method, url, headers, body, _ = api.param_serialize(
        method, path, header_params={"Content-Type": content_type}, body=body
    )
    response = api.call_api(method, url, header_params=headers, body=body)
    response.read()
    if response.status >= 400:
        raise ApiException(status=response.status, reason=response.reason)
    return json.loads(response.data)


def _sm(name: str, version: str = "1.0") -> dict[str, Any]:
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "/models/demo", "version": version}},
        "status": {"phase": "Injected"},
    }


def test_create_fills_metadata_answers_201_and_drops_status(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    _, code, _ = _custom(api).create_namespaced_custom_object_with_http_info(
        *SM[:2], "default", SM[2], _sm("a")
    )
    assert code == 201
    obj = kube.call(lambda: kube.emulator.get("/".join(SM), "default", "a"))
    assert obj is not None
    meta = obj["metadata"]
    assert meta["namespace"] == "default"
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    assert "status" not in obj
    with pytest.raises(ApiException) as exc:
        _custom(api).create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
    assert exc.value.status == 409


def test_generation_moves_on_spec_only_and_status_only_via_subresource(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    custom = _custom(api)
    custom.create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
    first = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    # The main endpoint ignores status; a metadata change does not move the generation.
    custom.patch_namespaced_custom_object(
        *SM[:2], "default", SM[2], "a",
        {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Ignored"}},
    )  # fmt: skip
    second = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert second["metadata"]["generation"] == 1
    assert second["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert "status" not in second
    # /status changes only the status.
    custom.patch_namespaced_custom_object_status(
        *SM[:2], "default", SM[2], "a",
        {"status": {"phase": "Ready"}, "spec": {"replicas": 7}},
    )  # fmt: skip
    third = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert third["status"] == {"phase": "Ready"}
    assert "replicas" not in third["spec"]
    assert third["metadata"]["generation"] == 1
    # A spec change moves the generation; a no-op patch moves nothing.
    custom.patch_namespaced_custom_object(
        *SM[:2], "default", SM[2], "a", {"spec": {"model": {"version": "2.0"}}}
    )
    fourth = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert fourth["metadata"]["generation"] == 2
    custom.patch_namespaced_custom_object(
        *SM[:2], "default", SM[2], "a", {"spec": {"model": {"version": "2.0"}}}
    )
    fifth = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert fifth["metadata"]["resourceVersion"] == fourth["metadata"]["resourceVersion"]


def test_stale_resource_version_is_a_conflict(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    custom = _custom(api)
    created = custom.create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
    custom.patch_namespaced_custom_object(*SM[:2], "default", SM[2], "a", {"spec": {"replicas": 2}})
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}}
    with pytest.raises(ApiException) as exc:
        custom.patch_namespaced_custom_object(
            *SM[:2], "default", SM[2], "a", {**stale, "spec": {"replicas": 3}}
        )
    assert exc.value.status == 409


def test_json_patch_test_failure_is_422(kube: KubeThread, api: kubernetes.client.ApiClient) -> None:
    _custom(api).create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
    with pytest.raises(ApiException) as exc:
        _raw(
            api,
            "PATCH",
            "/apis/kubescribe.io/v1alpha1/namespaces/default/speechmodels/a",
            [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}],
            "application/json-patch+json",
        )
    assert exc.value.status == 422


def test_namespaces_are_served(kube: KubeThread, api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team-a"}})
    assert [ns.metadata.name for ns in core.list_namespace().items] == ["team-a"]
    assert core.read_namespace("team-a").metadata.uid


def test_injected_faults_answer_then_stop(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    kube.call(lambda: kube.emulator.inject_fault(500, times=2, method="POST", path="speechmodels"))
    custom = _custom(api)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            custom.create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
        assert exc.value.status == 500
    custom.create_namespaced_custom_object(*SM[:2], "default", SM[2], _sm("a"))
    assert kube.call(kube.emulator.pending_faults) == 0


def test_watch_streams_existing_then_new_objects_with_label_selector(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"k": "v"}}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        method, url, headers, _, _ = api.param_serialize(
            "GET",
            "/api/v1/namespaces/default/configmaps",
            query_params=[("watch", "true"), ("labelSelector", "k=v")],
        )
        response = api.call_api(method, url, header_params=headers).response
        for line in response:
            event = json.loads(line)
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if len(seen) == 2:
                done.set()
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    kube.wait_for(lambda _: seen, what="the initial event")
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "d", "labels": {"k": "v"}}})
    assert done.wait(WAIT_TIMEOUT)
    assert seen == [("ADDED", "a"), ("ADDED", "d")]


def test_a_watch_resumed_from_a_resource_version_sends_only_newer_objects(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    old = core.create_namespaced_config_map("default", {"metadata": {"name": "old"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "newer"}})
    seen: list[tuple[str, str]] = []

    def watch() -> None:
        method, url, headers, _, _ = api.param_serialize(
            "GET",
            "/api/v1/namespaces/default/configmaps",
            query_params=[("watch", "true"), ("resourceVersion", old.metadata.resource_version)],
        )
        response = api.call_api(method, url, header_params=headers).response
        for line in response:
            event = json.loads(line)
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if event["object"]["metadata"]["name"] == "last":
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    kube.wait_for(lambda _: seen, what="the first event")
    core.create_namespaced_config_map("default", {"metadata": {"name": "last"}})
    thread.join(WAIT_TIMEOUT)
    assert seen == [("ADDED", "newer"), ("ADDED", "last")]


def test_delete_collects_dependents_and_honours_finalizers(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    custom = _custom(api)
    body = _sm("a")
    body["metadata"]["finalizers"] = ["test/hold"]
    owner = custom.create_namespaced_custom_object(*SM[:2], "default", SM[2], body)
    ref = {
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": "a", "uid": owner["metadata"]["uid"], "controller": True,
    }  # fmt: skip
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "child", "ownerReferences": [ref]}}
    )
    core.create_namespaced_config_map("default", {"metadata": {"name": "free"}})
    custom.delete_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    held = custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert held["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("child", "default")
    custom.patch_namespaced_custom_object(
        *SM[:2], "default", SM[2], "a", {"metadata": {"finalizers": None}}
    )
    names = {cm.metadata.name for cm in core.list_namespaced_config_map("default").items}
    assert names == {"free"}
    with pytest.raises(ApiException) as exc:
        custom.get_namespaced_custom_object(*SM[:2], "default", SM[2], "a")
    assert exc.value.status == 404


def _deployment(name: str, version: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "initContainers": [{"name": "fetch", "image": "x"}],
                    "containers": [{"name": "runtime", "image": "x", "env": [
                        {"name": "VERSION", "value": version}]}],
                },
            },
        },
    }  # fmt: skip


def _deployment_status(emulator: Emulator, name: str) -> dict[str, Any]:
    obj = emulator.get("apps/v1/deployments", "default", name)
    return (obj or {}).get("status", {})


def _progressing(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions", []):
        if cond["type"] == "Progressing":
            return str(cond["reason"])
    return None


def test_deployment_controller_rolls_out_fails_and_rolls_back(
    kube: KubeThread, api: kubernetes.client.ApiClient, controller: DeploymentController
) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", _deployment("web", "1"))
    kube.wait_for(
        lambda em: (
            _deployment_status(em, "web").get("readyReplicas") == 2
            and _progressing(_deployment_status(em, "web")) == "NewReplicaSetAvailable"
        ),
        what="v1 ready",
    )
    # v2 crash-loops: the old pods keep serving, the new ones never become ready.
    controller.behave("crashloop", when='"value":"2"')
    apps.patch_namespaced_deployment("web", "default", _deployment("web", "2"))
    kube.wait_for(
        lambda em: any(
            s["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
            for p in em.list("v1/pods", "default")
            for s in p.get("status", {}).get("containerStatuses", [])
        ),
        what="crash-looping pods",
    )
    status = kube.call(lambda: _deployment_status(kube.emulator, "web"))
    assert status["readyReplicas"] == 2 and status["updatedReplicas"] == 2
    assert len(kube.call(lambda: kube.emulator.list("apps/v1/replicasets", "default"))) == 2
    # Rolling back to v1 reuses its ReplicaSet; the crash-looping pods go away.
    apps.patch_namespaced_deployment("web", "default", _deployment("web", "1"))
    kube.wait_for(
        lambda em: (
            len(em.list("v1/pods", "default")) == 2
            and _deployment_status(em, "web").get("updatedReplicas") == 2
            and _progressing(_deployment_status(em, "web")) == "NewReplicaSetAvailable"
        ),
        what="rolled back",
    )
    assert len(kube.call(lambda: kube.emulator.list("apps/v1/replicasets", "default"))) == 2
    # Deleting the Deployment collects its ReplicaSets and pods.
    apps.delete_namespaced_deployment("web", "default")
    assert kube.call(lambda: kube.emulator.list("v1/pods", "default")) == []
    assert kube.call(lambda: kube.emulator.list("apps/v1/replicasets", "default")) == []


def test_scale_subresource_sets_replicas(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    apps.create_namespaced_deployment("default", _deployment("web", "1", replicas=2))
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment_scale("web", "default").spec.replicas == 5
    dep = kube.call(lambda: kube.emulator.get("apps/v1/deployments", "default", "web"))
    assert dep is not None
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 2


def test_a_dependent_of_a_gone_owner_is_collected(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "no-such-uid"}
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "orphan", "ownerReferences": [ref]}}
    )
    assert kube.call(lambda: kube.emulator.list("v1/configmaps", "default")) == []


def test_built_in_objects_are_defaulted_like_the_api_server_does(
    kube: KubeThread, api: kubernetes.client.ApiClient
) -> None:
    body = _deployment("web", "1")
    body["spec"].pop("replicas")
    body["spec"]["template"]["spec"]["volumes"] = []
    kubernetes.client.AppsV1Api(api).create_namespaced_deployment("default", body)
    dep = kube.call(lambda: kube.emulator.get("apps/v1/deployments", "default", "web"))
    assert dep is not None
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    pod = spec["template"]["spec"]
    assert "volumes" not in pod  # omitempty
    assert pod["restartPolicy"] == "Always"
    assert pod["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    # Custom resources are stored as sent.
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        *SM[:2], "default", SM[2], {**_sm("a"), "spec": {"model": {}, "list": []}}
    )
    assert kube.call(lambda: kube.emulator.get("/".join(SM), "default", "a"))["spec"]["list"] == []
