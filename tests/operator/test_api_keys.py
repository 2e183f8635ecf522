"""runtime.apiKeySecret: the operator mounts the Secret into the runtime container and points
the runtime at it through contract 4 (KUBESCRIBE_API_KEYS_FILE); off when not set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubescribe_operator import builders
from kubescribe_operator.api import DNS1123_SUBDOMAIN
from kubescribe_operator.spec import SpecError, SpeechModelSpec, parse_spec
from kubescribe_runtime.config import ServeConfig, parse

ROOT = Path(__file__).resolve().parents[2]
UID = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"
K8S_VERSIONS = ["1.29.0", "1.37.0"]


def spec(**runtime: Any) -> SpeechModelSpec:
    body = {"model": {"uri": "s3://bucket/m", "version": "1.0.0"}, "runtime": runtime}
    return SpeechModelSpec.model_validate(body)


def pod(s: SpeechModelSpec) -> dict[str, Any]:
    built = builders.build_children("demo", "speech", UID, s, s.model.ref())
    deployment = next(obj for obj in built if obj["kind"] == "Deployment")
    template: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return template


def containers(s: SpeechModelSpec) -> dict[str, dict[str, Any]]:
    p = pod(s)
    return {c["name"]: c for c in p["initContainers"] + p["containers"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_without_a_secret_nothing_is_mounted_and_keys_stay_off() -> None:
    s = spec()
    assert s.runtime.api_key_secret is None
    assert all(v.get("secret") is None for v in pod(s)["volumes"])
    runtime = containers(s)["runtime"]
    assert "KUBESCRIBE_API_KEYS_FILE" not in env(runtime)
    config, _ = parse(ServeConfig, [], "kubescribe serve", "", environ=env(runtime))
    assert config.api_keys_file is None and config.api_keys is None


def test_the_secret_is_mounted_read_only_into_the_runtime_only() -> None:
    s = spec(apiKeySecret="speech-api-keys")
    volume = next(v for v in pod(s)["volumes"] if v["name"] == "api-keys")
    assert volume == {
        "name": "api-keys",
        "secret": {"secretName": "speech-api-keys", "defaultMode": 0o440},
    }
    by_name = containers(s)
    mounts = {m["name"]: m for m in by_name["runtime"]["volumeMounts"]}
    assert mounts["api-keys"] == {
        "name": "api-keys",
        "mountPath": builders.API_KEYS_DIR,
        "readOnly": True,
    }
    for name, container in by_name.items():
        if name != "runtime":  # the fetch (and a cache init step) never see the keys
            assert all(m["name"] != "api-keys" for m in container["volumeMounts"])
            assert "KUBESCRIBE_API_KEYS_FILE" not in env(container)


def test_the_runtime_reads_the_mounted_keys_from_the_rendered_environment() -> None:
    runtime = containers(spec(apiKeySecret="speech-api-keys"))["runtime"]
    assert runtime["args"] == ["serve"]  # no flags: the variable alone turns keys on
    config, _ = parse(ServeConfig, [], "kubescribe serve", "", environ=env(runtime))
    assert config.api_keys_file == Path(builders.API_KEYS_DIR)


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_every_child_with_keys_validates_strictly(k8s: str) -> None:
    s = spec(apiKeySecret="speech-api-keys", device="gpu")
    for obj in builders.build_children("demo", "speech", UID, s, s.model.ref()):
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, k8s, strict=True)


def test_a_secret_change_rolls_the_pods_to_mount_it() -> None:
    before = pod(spec())
    after = pod(spec(apiKeySecret="speech-api-keys"))
    assert before != after


@pytest.mark.parametrize("name", ["Speech_Keys", "-keys", "a" * 254, ""])
def test_a_bad_secret_name_is_refused_by_the_model_and_the_crd(name: str) -> None:
    body = {"model": {"uri": "s3://bucket/m", "version": "1"}, "runtime": {"apiKeySecret": name}}
    with pytest.raises(SpecError, match="apiKeySecret"):
        parse_spec(body)
    crd = yaml.safe_load((ROOT / "crds" / "speechmodel.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field = schema["properties"]["spec"]["properties"]["runtime"]["properties"]["apiKeySecret"]
    assert field["type"] == "string" and field["maxLength"] == 253
    assert field["pattern"] == DNS1123_SUBDOMAIN


@pytest.mark.parametrize(
    ("variable", "allowed"),
    [("KUBESCRIBE_API_KEYS_FILE", False), ("KUBESCRIBE_API_KEYS", True)],
)
def test_runtime_env_may_give_keys_but_not_move_the_mounted_file(
    variable: str, allowed: bool
) -> None:
    entry = {"name": variable, "valueFrom": {"secretKeyRef": {"name": "keys", "key": "team-a"}}}
    body = {"model": {"uri": "s3://bucket/m", "version": "1"}, "runtime": {"env": [entry]}}
    if allowed:
        assert env(containers(parse_spec(body))["runtime"]).keys() >= {variable}
    else:
        with pytest.raises(SpecError, match=variable):
            parse_spec(body)
