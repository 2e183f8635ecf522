"""The runtime pod of a SpeechModel: containers, environment, resources, probes, volumes and
scheduling. Pure.

Runtime pods are configured only through the `KUBESCRIBE_*` variables of
docs/runtime-config.md (contract 4): an init container runs `kubescribe fetch` into an emptyDir
artifact volume (optionally through a digest-keyed cache volume), then `kubescribe serve` reads it.
"""

from __future__ import annotations

import math
from typing import Any

from kubescribe_operator import catalog, quality_gate
from kubescribe_operator.api import ModelRef
from kubescribe_operator.kubetypes import prune_unknown
from kubescribe_operator.naming import (
    ANNOTATION_MODEL_REF,
    ANNOTATION_MODEL_SHA256,
    ANNOTATION_MODEL_URI,
    LABEL_MODEL_VERSION,
    common_labels,
)
from kubescribe_operator.runtime_budget import (
    PRE_STOP_SECONDS,
    RuntimeSettings,
    memory_mib,
    scratch_mib,
)
from kubescribe_operator.runtime_budget import (
    termination_grace_seconds as _grace_seconds,
)
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]

CONTAINER_NAME = "runtime"
INIT_CONTAINER_NAME = "fetch"
CACHE_INIT_CONTAINER_NAME = "cache-permissions"
EPHEMERAL_STORAGE = "ephemeral-storage"
HTTP_PORT = 8080
PORT_NAME = "http"
RUN_AS = 10001  # the runtime image's user (runtime/Dockerfile)
ARTIFACT_DIR = "/var/lib/kubescribe/model"
CACHE_DIR = "/var/cache/kubescribe"
PVC_ROOT = "/mnt/pvc"
API_KEYS_DIR = "/etc/kubescribe/api-keys"  # runtime.apiKeySecret, mounted
SCRATCH_DIR = "/var/lib/kubescribe/scratch"  # spooled uploads (KUBESCRIBE_SCRATCH_DIR)
GPU_RESOURCE = "nvidia.com/gpu"
GPU_RUNTIME_CLASS = "nvidia"
DEFAULT_CPU_REQUEST = "1"  # the memory request and limit follow from the runtime settings
CACHE_INIT_RESOURCES: Obj = {
    "requests": {"cpu": "10m", "memory": "16Mi"},
    "limits": {"memory": "64Mi"},
}
FETCH_RESOURCES: Obj = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "1Gi"},
}


def _env(name: str, value: object) -> Obj:
    return {"name": name, "value": str(value).lower() if isinstance(value, bool) else str(value)}


def cpu_cores(quantity: int | float | str) -> float:
    """A CPU quantity in cores: ``2``, ``"1.5"``, ``"500m"``."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


def intra_op_threads(spec: SpeechModelSpec) -> int:
    """ONNX intra-op threads: ``runtime.threads`` when set, else the container's CPUs — its CPU
    limit, or its request without one (rounded up, at least 1). A pod that sizes its thread pool
    by the node's cores while its quota is a few CPUs is throttled in every inference."""
    if spec.runtime.threads > 0:
        return spec.runtime.threads
    resources = _resources(spec)
    for kind in ("limits", "requests"):
        cpu = resources.get(kind, {}).get("cpu")
        if cpu is not None:
            return max(1, math.ceil(cpu_cores(cpu) - 1e-9))
    return 0  # nothing to go by: the runtime reads the quota of its cgroup


def runtime_env(spec: SpeechModelSpec) -> list[Obj]:
    """The serving container's environment: contract 4 variables, then the user's runtime.env.

    A user variable with the name of a tunable the operator renders (e.g. KUBESCRIBE_THREADS)
    replaces it; the variables that wire the pod together are refused by the schema.
    """
    rt = spec.runtime
    rendered = [
        _env("KUBESCRIBE_MODEL_DIR", ARTIFACT_DIR),
        _env("KUBESCRIBE_MODEL_FILE", rt.model_file),
        _env("KUBESCRIBE_HOST", "0.0.0.0"),
        _env("KUBESCRIBE_PORT", HTTP_PORT),
        _env("KUBESCRIBE_DEVICE", rt.device),
        _env("KUBESCRIBE_THREADS", intra_op_threads(spec)),
        _env("KUBESCRIBE_MAX_BATCH_SIZE", rt.batching.max_batch_size),
        _env("KUBESCRIBE_MAX_DELAY_MS", rt.batching.max_delay_ms),
        _env("KUBESCRIBE_DRAIN_TIMEOUT_S", rt.drain_timeout_seconds),
        _env("KUBESCRIBE_SCRATCH_DIR", SCRATCH_DIR),
        _env("KUBESCRIBE_LOG_FORMAT", "json"),
        # A model that cannot load crash-loops (its reason the termination message) instead of
        # sitting unready until the rollout's deadline: the rollback comes in seconds.
        _env("KUBESCRIBE_EXIT_ON_LOAD_FAILURE", "true"),
        # spec.qualityGate: a pod refused by the gate exits too, its verdict the message.
        *(_env(name, value) for name, value in quality_gate.runtime_env(spec)),
    ]
    if rt.api_key_secret:
        rendered.append(_env("KUBESCRIBE_API_KEYS_FILE", API_KEYS_DIR))
    user = [_env_var(e.dump()) for e in rt.env]
    overridden = {e["name"] for e in user}
    return [e for e in rendered if e["name"] not in overridden] + user


def _env_var(var: Obj) -> Obj:
    if "valueFrom" in var:
        var = {**var, "valueFrom": prune_unknown(var["valueFrom"], "V1EnvVarSource")}
    return var


def fetch_env(spec: SpeechModelSpec, model_ref: ModelRef) -> list[Obj]:
    """The init container's environment (`kubescribe fetch`)."""
    env = [
        _env("KUBESCRIBE_MODEL_URI", model_ref.uri),
        _env("KUBESCRIBE_MODEL_DIR", ARTIFACT_DIR),
    ]
    if model_ref.sha256:
        env.append(_env("KUBESCRIBE_MODEL_SHA256", model_ref.sha256))
    if spec.model.cache is not None:
        env.append(_env("KUBESCRIBE_CACHE_DIR", CACHE_DIR))
    if _pvc_claim(model_ref.uri) is not None:
        env.append(_env("KUBESCRIBE_PVC_ROOT", PVC_ROOT))
    return env


def _pvc_claim(uri: str) -> str | None:
    if not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def _fixed_user(spec: SpeechModelSpec, *keys: str) -> Obj:
    """The image's user, unless the platform assigns one (pod.fixedUser false: OpenShift's
    restricted-v2 refuses a runAsUser or fsGroup outside the namespace's range)."""
    return {key: RUN_AS for key in keys} if spec.pod.fixed_user else {}


def _container_security(spec: SpeechModelSpec) -> Obj:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        **_fixed_user(spec, "runAsUser", "runAsGroup"),
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(spec: SpeechModelSpec) -> Obj:
    security: Obj = {
        "runAsNonRoot": True,
        **_fixed_user(spec, "runAsUser", "runAsGroup", "fsGroup"),
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.pod.fixed_user:
        # A cache claim is made group-writable once, not walked at every pod start.
        security["fsGroupChangePolicy"] = "OnRootMismatch"
    return security


def _identity(spec: SpeechModelSpec) -> Obj:
    """ServiceAccount and pull Secrets (pod options): the fetch's cloud identity comes from the
    ServiceAccount (its platform webhook or metadata server), never from an API token unless
    asked for."""
    options = spec.pod
    out: Obj = {"automountServiceAccountToken": options.automount_service_account_token}
    if options.service_account_name:
        out["serviceAccountName"] = options.service_account_name
    if options.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    return out


def runtime_settings(spec: SpeechModelSpec) -> RuntimeSettings:
    """The settings the runtime container will run with, as far as its size depends on them."""
    rt = spec.runtime
    rendered = {
        "KUBESCRIBE_MAX_BATCH_SIZE": rt.batching.max_batch_size,
        "KUBESCRIBE_DRAIN_TIMEOUT_S": rt.drain_timeout_seconds,
    }
    user = {e.name: e.value for e in rt.env if e.value is not None}
    return RuntimeSettings.resolve(rendered, user)


def default_resources(spec: SpeechModelSpec) -> Obj:
    """Without ``runtime.resources``: a CPU request, and memory from the runtime settings."""
    request, limit = memory_mib(runtime_settings(spec))
    return {
        "requests": {"cpu": DEFAULT_CPU_REQUEST, "memory": f"{request}Mi"},
        "limits": {"memory": f"{limit}Mi"},
    }


def _resources(spec: SpeechModelSpec) -> Obj:
    rt = spec.runtime
    resources: Obj = default_resources(spec) if rt.resources is None else rt.resources.dump()
    resources = {k: dict(v) for k, v in resources.items()}
    # The artifact volume counts against the pod's ephemeral storage: the scheduler must see it.
    resources.setdefault("requests", {}).setdefault(EPHEMERAL_STORAGE, spec.model.storage)
    if rt.device == "gpu":
        resources.setdefault("limits", {})[GPU_RESOURCE] = rt.gpu_count()
        if GPU_RESOURCE in resources.get("requests", {}):
            resources["requests"][GPU_RESOURCE] = rt.gpu_count()
    return resources


def _http_probe(path: str, period: int, failures: int, timeout: int = 2) -> Obj:
    return {
        "httpGet": {"path": path, "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def termination_grace_seconds(spec: SpeechModelSpec) -> int:
    """preStop pause + the runtime's drain + a margin: SIGKILL never cuts a drain short."""
    return _grace_seconds(runtime_settings(spec))


def _volumes_and_mounts(
    spec: SpeechModelSpec, model_ref: ModelRef
) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(volumes, init container mounts, runtime container mounts)."""
    volumes: list[Obj] = [
        {"name": "artifact", "emptyDir": {"sizeLimit": spec.model.storage}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "scratch", "emptyDir": {"sizeLimit": f"{scratch_mib(runtime_settings(spec))}Mi"}},
    ]
    init_mounts: list[Obj] = [
        {"name": "artifact", "mountPath": ARTIFACT_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    runtime_mounts: list[Obj] = [
        {"name": "artifact", "mountPath": ARTIFACT_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    cache = spec.model.cache
    if cache is not None:
        if cache.claim_name is not None:
            volumes.append(
                {"name": "cache", "persistentVolumeClaim": {"claimName": cache.claim_name}}
            )
        else:
            volumes.append(
                {
                    "name": "cache",
                    "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"},
                }
            )
        init_mounts.append({"name": "cache", "mountPath": CACHE_DIR})
        # A cache hit may be linked into the artifact volume: the target must resolve here too.
        runtime_mounts.append({"name": "cache", "mountPath": CACHE_DIR, "readOnly": True})
    if spec.runtime.api_key_secret:
        # Every entry of the Secret is a file of keys; the kubelet updates them in place and
        # the runtime re-reads them, so keys rotate without a rollout. 0440: root and fsGroup.
        secret = {"secretName": spec.runtime.api_key_secret, "defaultMode": 0o440}
        volumes.append({"name": "api-keys", "secret": secret})
        runtime_mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    claim = _pvc_claim(model_ref.uri)
    if claim is not None:
        volumes.append(
            {
                "name": "model-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
        init_mounts.append(
            {"name": "model-source", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": True}
        )
    return volumes, init_mounts, runtime_mounts


def _scheduling(spec: SpeechModelSpec) -> Obj:
    sched = spec.scheduling
    out: Obj = {}
    tolerations = [t.dump() for t in (sched.tolerations or [])] if sched else []
    if spec.runtime.device == "gpu":
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
        runtime_class = GPU_RUNTIME_CLASS
        if sched is not None and sched.runtime_class_name is not None:
            runtime_class = sched.runtime_class_name
        if runtime_class:
            out["runtimeClassName"] = runtime_class
    elif sched is not None and sched.runtime_class_name:
        out["runtimeClassName"] = sched.runtime_class_name
    if tolerations:
        out["tolerations"] = tolerations
    if sched is not None:
        if sched.node_selector:
            out["nodeSelector"] = dict(sched.node_selector)
        if sched.affinity:
            out["affinity"] = prune_unknown(sched.affinity, "V1Affinity")
        if sched.priority_class_name:
            out["priorityClassName"] = sched.priority_class_name
    return out


def _cache_permissions(spec: SpeechModelSpec, image: str) -> list[Obj]:
    """The init step that makes a hostPath cache writable by the runtime user: the kubelet
    applies fsGroup to a claim (where its driver supports it) but never to a hostPath, which it
    creates root-owned. Only with a hostPath cache, which needs a privileged namespace anyway."""
    cache = spec.model.cache
    if cache is None or cache.host_path is None:
        return []
    return [
        {
            "name": CACHE_INIT_CONTAINER_NAME,
            "image": image,
            "command": ["sh", "-c"],
            "args": [f"chown {RUN_AS}:{RUN_AS} {CACHE_DIR} && chmod 0775 {CACHE_DIR}"],
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"memory": "64Mi"},
            },
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}],
        }
    ]


def pod_template(name: str, spec: SpeechModelSpec, model_ref: ModelRef) -> Obj:
    rt = spec.runtime
    volumes, init_mounts, runtime_mounts = _volumes_and_mounts(spec, model_ref)
    routed = catalog.volume(spec)  # behind a Gateway: the models' catalogue (catalog.py)
    if routed is not None:
        volumes.append(routed[0])
        runtime_mounts.append(routed[1])
    pull = {"imagePullPolicy": rt.image_pull_policy} if rt.image_pull_policy else {}
    fetch: Obj = {
        "name": INIT_CONTAINER_NAME,
        "image": rt.fetch_image(),
        **pull,
        "command": ["kubescribe"],
        "args": ["fetch"],
        "env": fetch_env(spec, model_ref),
        "resources": FETCH_RESOURCES,
        "securityContext": _container_security(spec),
        "volumeMounts": init_mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.model.credentials_secret:
        fetch["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret}}]
    runtime: Obj = {
        "name": CONTAINER_NAME,
        "image": rt.runtime_image(),
        **pull,
        "command": ["kubescribe"],
        "args": ["serve"],
        "env": runtime_env(spec) + catalog.runtime_env(name, spec),
        "ports": [{"name": PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": _resources(spec),
        "securityContext": _container_security(spec),
        "volumeMounts": runtime_mounts,
        # Startup: the model is loaded and warmed up (/readyz), within 5 minutes; only then does
        # liveness start. Liveness: /healthz, which fails when the inference loop is wedged
        # (30 s of failures restart the container). Readiness: /readyz (loaded, not draining).
        "startupProbe": _http_probe("/readyz", period=5, failures=60),
        "readinessProbe": _http_probe("/readyz", period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", period=10, failures=3, timeout=5),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    annotations = {
        **(spec.pod.annotations or {}),
        ANNOTATION_MODEL_REF: model_ref.digest(),
        ANNOTATION_MODEL_URI: model_ref.uri,
    }
    if model_ref.sha256:
        annotations[ANNOTATION_MODEL_SHA256] = model_ref.sha256
    return {
        "metadata": {
            "labels": {
                **(spec.pod.labels or {}),
                **common_labels(name),
                LABEL_MODEL_VERSION: model_ref.version,
            },
            "annotations": annotations,
        },
        "spec": {
            **_identity(spec),
            "enableServiceLinks": False,
            "securityContext": _pod_security(spec),
            "terminationGracePeriodSeconds": termination_grace_seconds(spec),
            "initContainers": [*_cache_permissions(spec, rt.fetch_image()), fetch],
            "containers": [runtime],
            "volumes": volumes,
            **_scheduling(spec),
        },
    }
