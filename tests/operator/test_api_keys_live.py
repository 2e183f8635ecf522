"""runtime.apiKeySecret on the real control plane: the API server checks the field, the real
operator mounts the Secret into pods that become Ready, and never reads the Secret itself."""

from __future__ import annotations

import json
from typing import Any

import yaml
from kube_cluster import GROUP, OPERATOR_USER, VERSION, Cluster, OperatorProcess, eventually

Obj = dict[str, Any]
SECRET = "speech-api-keys"


def speech_model(api_key_secret: str) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeechModel",
        "metadata": {"name": "demo"},
        "spec": {
            "model": {"uri": "s3://models/demo/1.0", "version": "1.0"},
            "runtime": {"device": "cpu", "apiKeySecret": api_key_secret},
            "replicas": 1,
        },
    }


def get(cluster: Cluster, namespace: str, *what: str) -> Obj | None:
    out = cluster.kubectl("get", "-n", namespace, *what, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_the_api_server_refuses_a_bad_secret_name(cluster: Cluster, namespace: str) -> None:
    refused = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=yaml.safe_dump(speech_model("Not_A_Secret_Name")), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.runtime.apiKeySecret" in refused.stderr


def test_the_operator_mounts_the_key_secret_into_ready_pods(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    since = cluster.audit_offset()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "stringData": {"team-a": "ks-live-3f9c2b7e1d"},
    }
    cluster.apply(secret, "-n", namespace)
    cluster.apply(speech_model(SECRET), "-n", namespace)

    def ready() -> Obj | None:
        model = get(cluster, namespace, "speechmodel", "demo") or {}
        status = model.get("status", {})
        return status if status.get("readyReplicas") == 1 else None

    eventually(ready, "the model ready on one pod with its keys mounted")
    pods = (get(cluster, namespace, "pods") or {}).get("items", [])
    (pod,) = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == SECRET
    (runtime,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in runtime["env"]}
    mounts = {m["name"]: m for m in runtime["volumeMounts"]}
    assert env["KUBESCRIBE_API_KEYS_FILE"] == mounts["api-keys"]["mountPath"]
    assert mounts["api-keys"]["readOnly"] is True
    assert all(
        m["name"] != "api-keys" for c in pod["spec"]["initContainers"] for m in c["volumeMounts"]
    )
    # The kubelet mounts the Secret; the operator needs no access to it and asks for none.
    touched = [e for e in cluster.audit(since, user=OPERATOR_USER) if e.resource == "secrets"]
    assert touched == []
