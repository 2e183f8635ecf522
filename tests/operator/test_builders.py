"""The builders: every object valid for Kubernetes, pods configured only through contract 4."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubescribe_operator import builders
from kubescribe_operator.api import ModelRef
from kubescribe_operator.spec import SpeechModel, SpeechModelSpec
from kubescribe_runtime.config import FetchConfig, ServeConfig, parse, settings_table

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "speechmodels").glob("*.yaml"))
UID = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"
# The oldest Kubernetes the operator supports and the newest the validator knows.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
NOT_IN_KUBERNETES_SCHEMAS = {"ServiceMonitor", "HTTPRoute"}  # CRDs (test_httproute: its own)


def load(path: Path) -> SpeechModel:
    return SpeechModel.model_validate(yaml.safe_load(path.read_text()))


def spec(**overrides: Any) -> SpeechModelSpec:
    body: dict[str, Any] = {"model": {"uri": "s3://bucket/m", "version": "1.0.0"}}
    body.update(overrides)
    return SpeechModelSpec.model_validate(body)


def children(s: SpeechModelSpec, ref: ModelRef | None = None) -> dict[str, dict[str, Any]]:
    built = builders.build_children("demo", "speech", UID, s, ref or s.model.ref())
    return {obj["kind"]: obj for obj in built}


def deployment(s: SpeechModelSpec, ref: ModelRef | None = None) -> dict[str, Any]:
    return children(s, ref)["Deployment"]


def pod(s: SpeechModelSpec, ref: ModelRef | None = None) -> dict[str, Any]:
    spec_: dict[str, Any] = deployment(s, ref)["spec"]["template"]["spec"]
    return spec_


def container(s: SpeechModelSpec, name: str = "runtime") -> dict[str, Any]:
    p = pod(s)
    return next(c for c in p["containers"] + p["initContainers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c["env"]}


# ---------------------------------------------------------------------------- validity


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_every_child_of_every_example_validates_strictly(path: Path, k8s: str) -> None:
    manifest = load(path)
    objects = builders.build_children(
        manifest.name, manifest.namespace, UID, manifest.spec, manifest.spec.model.ref()
    )
    for obj in objects:
        if obj["kind"] in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        kubernetes_validate.validate(obj, k8s, strict=True)


def test_strict_validation_catches_a_broken_object() -> None:
    """The check above has teeth: an unknown field or a wrong type is refused."""
    broken = deployment(spec())
    broken["spec"]["template"]["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37.0", strict=True)


def test_service_monitor_shape() -> None:
    monitor = children(spec(monitoring={"serviceMonitor": {"enabled": True, "interval": "15s"}}))[
        "ServiceMonitor"
    ]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == builders.selector_labels("demo")
    assert "ServiceMonitor" not in children(spec())


def test_children_cover_the_examples_kinds() -> None:
    kinds = set()
    for path in EXAMPLES:
        manifest = load(path)
        kinds |= set(children(manifest.spec))
    assert kinds == {kind for _, kind in builders.CHILD_KINDS}


# ------------------------------------------------------------------------- contract 4

DOCUMENTED = set(
    re.findall(r"`(KUBESCRIBE_[A-Z0-9_]+)`", (ROOT / "docs/runtime-config.md").read_text())
)
SERVE_VARIABLES = {variable for _, _, variable in settings_table(ServeConfig)}
FETCH_VARIABLES = {variable for _, _, variable in settings_table(FetchConfig)}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_rendered_variables_are_declared(path: Path) -> None:
    manifest = load(path)
    p = pod(manifest.spec)
    runtime_vars = {
        e["name"] for e in p["containers"][0]["env"] if e["name"].startswith("KUBESCRIBE_")
    }
    fetch_vars = {e["name"] for e in p["initContainers"][0]["env"]}
    assert runtime_vars and fetch_vars
    assert runtime_vars <= DOCUMENTED and fetch_vars <= DOCUMENTED
    assert runtime_vars <= SERVE_VARIABLES, runtime_vars - SERVE_VARIABLES
    assert fetch_vars <= FETCH_VARIABLES, fetch_vars - FETCH_VARIABLES


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_runtime_reads_the_rendered_environment(path: Path) -> None:
    """The containers run `kubescribe serve` / `kubescribe fetch` with no flags: the runtime's
    own configuration parser, given only the rendered variables, gets the spec's settings."""
    manifest = load(path)
    rt = manifest.spec.runtime
    p = pod(manifest.spec)
    serve, _ = parse(ServeConfig, [], "kubescribe serve", "", environ=env(p["containers"][0]))
    assert str(serve.model_dir) == builders.ARTIFACT_DIR
    assert (serve.host, serve.port, serve.device) == ("0.0.0.0", builders.HTTP_PORT, rt.device)
    assert serve.model_file == rt.model_file
    assert serve.max_batch_size == rt.batching.max_batch_size
    assert serve.max_delay_ms == rt.batching.max_delay_ms
    assert serve.drain_timeout_s == rt.drain_timeout_seconds
    assert serve.log_format == "json"
    fetch, _ = parse(FetchConfig, [], "kubescribe fetch", "", environ=env(p["initContainers"][0]))
    assert fetch.uri == manifest.spec.model.uri
    assert str(fetch.dest) == builders.ARTIFACT_DIR
    assert fetch.sha256 == manifest.spec.model.sha256
    assert (fetch.cache_dir is not None) is (manifest.spec.model.cache is not None)


def test_pods_are_configured_only_through_environment() -> None:
    for c in pod(spec())["containers"] + pod(spec())["initContainers"]:
        assert c["command"] == ["kubescribe"]
        assert c["args"] in (["serve"], ["fetch"])  # no flags: settings come from env only


def test_runtime_environment_follows_the_spec() -> None:
    s = spec(
        runtime={
            "device": "gpu",
            "modelFile": "model.int8.onnx",
            "threads": 3,
            "drainTimeoutSeconds": 45,
            "batching": {"maxBatchSize": 8, "maxDelayMs": 20},
        }
    )
    values = env(container(s))
    assert values["KUBESCRIBE_DEVICE"] == "gpu"
    assert values["KUBESCRIBE_MODEL_FILE"] == "model.int8.onnx"
    assert values["KUBESCRIBE_THREADS"] == "3"
    assert values["KUBESCRIBE_MAX_BATCH_SIZE"] == "8"
    assert values["KUBESCRIBE_MAX_DELAY_MS"] == "20"
    assert values["KUBESCRIBE_DRAIN_TIMEOUT_S"] == "45"
    assert values["KUBESCRIBE_HOST"] == "0.0.0.0"
    assert values["KUBESCRIBE_MODEL_DIR"] == builders.ARTIFACT_DIR


@pytest.mark.parametrize(
    ("runtime", "threads"),
    [
        ({}, "1"),  # the default request: 1 CPU
        ({"resources": {"requests": {"cpu": "3"}}}, "3"),
        ({"resources": {"requests": {"cpu": "500m"}}}, "1"),
        ({"resources": {"requests": {"cpu": "1500m"}}}, "2"),
        ({"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "4"}}}, "4"),  # the limit
        ({"resources": {"requests": {"cpu": 2}, "limits": {"cpu": "2500m"}}}, "3"),
        ({"threads": 6, "resources": {"requests": {"cpu": "2"}}}, "6"),  # set: kept
    ],
)
def test_threads_follow_the_cpu_limit_or_request(runtime: dict[str, Any], threads: str) -> None:
    assert env(container(spec(runtime=runtime)))["KUBESCRIBE_THREADS"] == threads


@pytest.mark.parametrize(
    ("quantity", "cores"), [("2", 2.0), (3, 3.0), ("250m", 0.25), ("1.5", 1.5)]
)
def test_cpu_quantities_in_cores(quantity: str | int, cores: float) -> None:
    assert builders.cpu_cores(quantity) == cores


def test_user_env_replaces_a_tunable_without_duplicates() -> None:
    s = spec(runtime={"threads": 2, "env": [{"name": "KUBESCRIBE_THREADS", "value": "7"}]})
    names = [e["name"] for e in container(s)["env"]]
    assert names.count("KUBESCRIBE_THREADS") == 1
    assert env(container(s))["KUBESCRIBE_THREADS"] == "7"


def test_fetch_environment() -> None:
    sha = "a" * 64
    s = spec(model={"uri": "s3://bucket/m", "version": "2", "sha256": sha})
    values = env(container(s, "fetch"))
    assert values == {
        "KUBESCRIBE_MODEL_URI": "s3://bucket/m",
        "KUBESCRIBE_MODEL_DIR": builders.ARTIFACT_DIR,
        "KUBESCRIBE_MODEL_SHA256": sha,
    }
    assert "KUBESCRIBE_MODEL_SHA256" not in env(container(spec(), "fetch"))


def test_credentials_secret_reaches_only_the_fetch() -> None:
    s = spec(model={"uri": "s3://bucket/m", "version": "1", "credentialsSecret": "s3-reader"})
    assert container(s, "fetch")["envFrom"] == [{"secretRef": {"name": "s3-reader"}}]
    assert "envFrom" not in container(s, "runtime")
    assert "envFrom" not in container(spec(), "fetch")


def test_artifact_volume_is_shared_between_fetch_and_runtime() -> None:
    p = pod(spec())
    assert {"name": "artifact", "emptyDir": {"sizeLimit": "2Gi"}} in p["volumes"]
    fetch_mounts = {m["name"]: m for m in p["initContainers"][0]["volumeMounts"]}
    runtime_mounts = {m["name"]: m for m in p["containers"][0]["volumeMounts"]}
    assert fetch_mounts["artifact"]["mountPath"] == runtime_mounts["artifact"]["mountPath"]
    assert runtime_mounts["artifact"]["readOnly"] is True
    assert "cache" not in fetch_mounts


@pytest.mark.parametrize(
    ("cache", "volume"),
    [
        ({"claimName": "shared"}, {"persistentVolumeClaim": {"claimName": "shared"}}),
        (
            {"hostPath": "/var/cache/kubescribe/ks"},
            {"hostPath": {"path": "/var/cache/kubescribe/ks", "type": "DirectoryOrCreate"}},
        ),
    ],
)
def test_cache_volume(cache: dict[str, str], volume: dict[str, Any]) -> None:
    s = spec(model={"uri": "s3://bucket/m", "version": "1", "cache": cache})
    p = pod(s)
    assert {"name": "cache", **volume} in p["volumes"]
    assert env(container(s, "fetch"))["KUBESCRIBE_CACHE_DIR"] == builders.CACHE_DIR
    assert {"name": "cache", "mountPath": builders.CACHE_DIR} in container(s, "fetch")[
        "volumeMounts"
    ]


@pytest.mark.parametrize(
    ("cache", "init_step"),
    [
        ({"claimName": "shared"}, False),  # the kubelet applies fsGroup to a claim
        ({"hostPath": "/var/cache/kubescribe/ks"}, True),  # but never to a hostPath: chown it first
    ],
)
def test_cache_volume_is_writable_by_the_runtime_user(
    cache: dict[str, str], init_step: bool
) -> None:
    """Defect 2.7."""
    p = pod(spec(model={"uri": "s3://bucket/m", "version": "1", "cache": cache}))
    assert p["securityContext"]["fsGroup"] == builders.RUN_AS
    assert p["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    names = [c["name"] for c in p["initContainers"]]
    assert names == (["cache-permissions", "fetch"] if init_step else ["fetch"])
    if init_step:
        step = p["initContainers"][0]
        assert f"chown {builders.RUN_AS}:{builders.RUN_AS} {builders.CACHE_DIR}" in step["args"][0]
        assert step["securityContext"]["capabilities"] == {
            "drop": ["ALL"],
            "add": ["CHOWN", "FOWNER"],
        }


@pytest.mark.parametrize(
    ("model", "resources", "size", "requested"),
    [
        ({}, None, "2Gi", "2Gi"),  # the default
        ({"storage": "20Gi"}, None, "20Gi", "20Gi"),
        # A request the user sets wins; the volume still gets its limit.
        ({"storage": "8Gi"}, {"requests": {"cpu": "1", "ephemeral-storage": "9Gi"}}, "8Gi", "9Gi"),
    ],
)
def test_artifact_volume_is_sized_and_requested(
    model: dict[str, Any], resources: dict[str, Any] | None, size: str, requested: str
) -> None:
    """Defect 2.6: a multi-GB model is visible to the scheduler and bounded on the node."""
    runtime = {"resources": resources} if resources else {}
    s = spec(model={"uri": "s3://bucket/m", "version": "1", **model}, runtime=runtime)
    assert {"name": "artifact", "emptyDir": {"sizeLimit": size}} in pod(s)["volumes"]
    assert container(s)["resources"]["requests"]["ephemeral-storage"] == requested


def test_pvc_uri_mounts_the_claim_read_only() -> None:
    s = spec(model={"uri": "pvc://store/stt/fr", "version": "1"})
    p = pod(s)
    assert {
        "name": "model-source",
        "persistentVolumeClaim": {"claimName": "store", "readOnly": True},
    } in p["volumes"]
    assert {"name": "model-source", "mountPath": "/mnt/pvc/store", "readOnly": True} in p[
        "initContainers"
    ][0]["volumeMounts"]
    assert env(container(s, "fetch"))["KUBESCRIBE_PVC_ROOT"] == builders.PVC_ROOT


# --------------------------------------------------------------------- pod behaviour


def test_probes_hit_the_runtime_endpoints() -> None:
    c = container(spec())
    # Liveness (a wedged inference loop fails /healthz) only once the model serves (/readyz).
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert env(c)["KUBESCRIBE_PORT"] == "8080"


@pytest.mark.parametrize("drain", [0, 30, 600])
def test_grace_period_covers_pre_stop_and_drain(drain: int) -> None:
    s = spec(runtime={"drainTimeoutSeconds": drain})
    p = pod(s)
    pre_stop = p["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert p["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain


def test_restricted_pod_security() -> None:
    p = pod(spec(runtime={"device": "gpu"}))
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["automountServiceAccountToken"] is False
    for c in p["containers"] + p["initContainers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        # A read-only root needs a writable /tmp.
        assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_gpu_pods() -> None:
    s = spec(runtime={"device": "gpu", "gpus": 2}, scheduling={"nodeSelector": {"gpu": "h100"}})
    p = pod(s)
    assert p["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p[
        "tolerations"
    ]
    assert p["runtimeClassName"] == "nvidia"
    assert p["nodeSelector"] == {"gpu": "h100"}
    assert "nvidia.com/gpu" not in str(p["initContainers"])  # the fetch needs no GPU


def test_gpu_runtime_class_can_be_chosen_or_dropped() -> None:
    assert (
        pod(spec(runtime={"device": "gpu"}, scheduling={"runtimeClassName": "nv"}))[
            "runtimeClassName"
        ]
        == "nv"
    )
    assert "runtimeClassName" not in pod(
        spec(runtime={"device": "gpu"}, scheduling={"runtimeClassName": ""})
    )


def test_cpu_pods_have_no_gpu_settings() -> None:
    p = pod(spec())
    assert "nvidia.com/gpu" not in p["containers"][0]["resources"].get("limits", {})
    assert "runtimeClassName" not in p and "tolerations" not in p


def test_user_resources_are_used() -> None:
    s = spec(runtime={"resources": {"requests": {"cpu": "3"}, "limits": {"memory": "6Gi"}}})
    assert container(s)["resources"] == {
        "requests": {"cpu": "3", "ephemeral-storage": "2Gi"},
        "limits": {"memory": "6Gi"},
    }


# ------------------------------------------------------------------------- rollouts


def test_rolling_update_defaults_keep_capacity() -> None:
    strategy = deployment(spec())["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert (
        deployment(spec(rollout={"progressDeadlineSeconds": 120}))["spec"][
            "progressDeadlineSeconds"
        ]
        == 120
    )


@pytest.mark.parametrize(
    "change",
    [
        {"version": "1.0.1"},
        {"uri": "s3://bucket/other"},
        {"sha256": "b" * 64},
    ],
)
def test_a_model_change_changes_the_pod_template(change: dict[str, str]) -> None:
    before = spec()
    after = spec(model={"uri": "s3://bucket/m", "version": "1.0.0", **change})
    old, new = deployment(before)["spec"]["template"], deployment(after)["spec"]["template"]
    assert old != new
    key = builders.ANNOTATION_MODEL_REF
    assert old["metadata"]["annotations"][key] != new["metadata"]["annotations"][key]


def test_a_scaling_change_keeps_the_pod_template() -> None:
    assert (
        deployment(spec(replicas=1))["spec"]["template"]
        == deployment(spec(replicas=5))["spec"]["template"]
    )


def test_the_model_ref_given_is_the_one_deployed() -> None:
    """During a rollback the builders get lastKnownGood, not the spec's model."""
    good = ModelRef(uri="s3://bucket/good", version="0.9.0", sha256="c" * 64)
    d = deployment(spec(), good)
    template = d["spec"]["template"]
    assert env(template["spec"]["initContainers"][0])["KUBESCRIBE_MODEL_URI"] == "s3://bucket/good"
    assert env(template["spec"]["initContainers"][0])["KUBESCRIBE_MODEL_SHA256"] == "c" * 64
    assert template["metadata"]["labels"][builders.LABEL_MODEL_VERSION] == "0.9.0"
    assert template["metadata"]["annotations"][builders.ANNOTATION_MODEL_REF] == good.digest()


def test_builders_are_deterministic() -> None:
    for path in EXAMPLES:
        s = load(path).spec
        assert children(s) == children(s)


# ------------------------------------------------------------------------- scaling


def test_fixed_replicas_without_autoscaling() -> None:
    built = children(spec(replicas=3))
    assert built["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in built


def test_autoscaling_never_sets_deployment_replicas() -> None:
    s = spec(
        replicas=3, autoscaling={"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilization": 70}
    )
    built = children(s)
    assert "replicas" not in built["Deployment"]["spec"]
    hpa = built["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]


def test_autoscaling_on_requests_in_flight() -> None:
    s = spec(autoscaling={"maxReplicas": 4, "targetRequestsInFlight": 6})
    metrics = children(s)["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metrics == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "kubescribe_requests_in_flight"},
                "target": {"type": "AverageValue", "averageValue": "6"},
            },
        }
    ]


@pytest.mark.parametrize(
    ("overrides", "has_pdb"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 0}, False),
        ({"replicas": 2}, True),
        ({"autoscaling": {"maxReplicas": 1, "targetCPUUtilization": 50}}, False),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilization": 50}}, True),
    ],
)
def test_pod_disruption_budget_only_with_several_replicas(
    overrides: dict[str, Any], has_pdb: bool
) -> None:
    built = children(spec(**overrides))
    assert ("PodDisruptionBudget" in built) is has_pdb
    if has_pdb:
        pdb = built["PodDisruptionBudget"]["spec"]
        assert pdb == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": builders.selector_labels("demo")},
        }


# ----------------------------------------------------------------- ownership & labels


def test_every_child_is_owned_and_labelled() -> None:
    s = spec(
        replicas=2,
        autoscaling={"maxReplicas": 3, "targetCPUUtilization": 50},
        monitoring={"serviceMonitor": {"enabled": True}},
        routing={"parentRefs": [{"name": "gw"}]},
    )
    built = builders.build_children("demo", "speech", UID, s, s.model.ref())
    assert [o["kind"] for o in built] == [kind for _, kind in builders.CHILD_KINDS]
    for obj in built:
        meta = obj["metadata"]
        assert meta["namespace"] == "speech" and meta["name"] == "demo"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kubescribe.io/v1alpha1",
                "kind": "SpeechModel",
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for label in ("name", "instance", "component", "part-of", "managed-by"):
            assert f"app.kubernetes.io/{label}" in meta["labels"]
        assert builders.child_identity(obj) == (obj["apiVersion"], obj["kind"], "demo")


def test_selectors_match_the_pods() -> None:
    built = children(spec(replicas=2))
    pod_labels = built["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selector = built["Deployment"]["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert built["Service"]["spec"]["selector"] == selector
    assert built["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector
    # The version label is on the pods, never in the (immutable) selector.
    assert builders.LABEL_MODEL_VERSION not in selector


def test_service() -> None:
    s = spec(service={"type": "LoadBalancer", "port": 9000, "annotations": {"a": "b"}})
    svc = children(s)["Service"]
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["metadata"]["annotations"] == {"a": "b"}
    assert builders.endpoint("demo", "speech", s) == "http://demo.speech.svc:9000"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"scheduling": {"affinity": {"podAntiAffinity": {}, "x-unknown": {"a": 1}}}}, "x-unknown"),
        (
            {"runtime": {"env": [{"name": "POD", "valueFrom": {"fieldRef": {}, "typo": 1}}]}},
            "typo",
        ),
    ],
)
def test_unknown_keys_under_kubernetes_types_are_refused(
    overrides: dict[str, Any], field: str
) -> None:
    """Issue 22.6: affinity and valueFrom are Kubernetes types, declared field by field (the CRD
    too): a typo is named, never dropped silently by the API server or the builders."""
    with pytest.raises(ValueError, match=f"'{field}' was unexpected"):
        spec(**overrides)
