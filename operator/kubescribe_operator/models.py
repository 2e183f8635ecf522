"""Contract 1: the SpeechModel API (`kubescribe.io/v1alpha1`) as pydantic models.

These models are the single source of the API: `kubescribe_operator.crd` generates the CRD's
structural OpenAPI schema (defaults, validation, CEL rules) from them, and a test checks that
the committed `crds/speechmodel.yaml` equals the generated one. Every validation rule is
written twice on purpose, once for pydantic (python validators) and once for the API server
(`x-kubernetes-validations` CEL rules, carried in `json_schema_extra`); the tests evaluate the
CEL rules and check both sides refuse the same bad manifests.

Field names are snake_case in Python and camelCase on the wire (`by_alias=True`).

Interface used by the operator process:
- `SpeechModelSpec.model_validate(body["spec"])`, `SpeechModelStatus.model_validate(body["status"])`
- `ModelRef(uri, version, sha256)`: what a Deployment runs; `spec.model.ref()` gives the wanted one.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from kubescribe.errors import KubescribeError

GROUP = "kubescribe.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeechModel"
PLURAL = "speechmodels"
SINGULAR = "speechmodel"
SHORT_NAMES = ["sm", "stt"]
CATEGORIES = ["kubescribe", "ml"]

DEFAULT_IMAGE = "ghcr.io/kubescribe/runtime:0.1.0"
# https://, s3://bucket/key, pvc://claim/path, file:///abs or a bare absolute path.
URI_PATTERN = r"^(file:///|/|https://[^/\s]+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/|$)|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/)\S*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# A label value, so that the version can be put on pods and ReplicaSets as a label.
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
PERCENT_PATTERN = r"^[0-9]+%$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# Variables the operator renders itself: a user's runtime.env may not override them.
RESERVED_ENV = (
    "KUBESCRIBE_MODEL_DIR",
    "KUBESCRIBE_MODEL_URI",
    "KUBESCRIBE_MODEL_SHA256",
    "KUBESCRIBE_CACHE_DIR",
    "KUBESCRIBE_PVC_ROOT",
    "KUBESCRIBE_HOST",
    "KUBESCRIBE_PORT",
    "KUBESCRIBE_DEVICE",
)
# The runtime's other settings (docs/runtime-config.md): a user may set these in runtime.env;
# any other KUBESCRIBE_* name is a typo the runtime would silently ignore.
TUNABLE_ENV = (
    "KUBESCRIBE_MODEL_FILE",
    "KUBESCRIBE_GPU_ID",
    "KUBESCRIBE_ALLOW_CPU_FALLBACK",
    "KUBESCRIBE_THREADS",
    "KUBESCRIBE_HTTP_THREADS",
    "KUBESCRIBE_MAX_BATCH_SIZE",
    "KUBESCRIBE_MAX_DELAY_MS",
    "KUBESCRIBE_BATCH_WAIT_FULL_DELAY",
    "KUBESCRIBE_MAX_QUEUE",
    "KUBESCRIBE_REQUEST_TIMEOUT_S",
    "KUBESCRIBE_MAX_UPLOAD_MB",
    "KUBESCRIBE_MAX_AUDIO_SECONDS",
    "KUBESCRIBE_WINDOW_SECONDS",
    "KUBESCRIBE_WINDOW_OVERLAP_SECONDS",
    "KUBESCRIBE_DRAIN_TIMEOUT_S",
    "KUBESCRIBE_LOG_LEVEL",
    "KUBESCRIBE_LOG_FORMAT",
)
MAX_HISTORY = 10


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


class SpecError(KubescribeError):
    """A SpeechModel manifest does not follow the schema."""

    exit_code = 2


def _cel(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def _cel_field(*rules: dict[str, str], **schema: Any) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules), **schema}


# A resource quantity, as controller-gen renders `resource.Quantity`: int-or-string with a pattern
# (which applies to strings only).
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
        }
    ),
]
IntOrPercent = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 16,
            "x-kubernetes-validations": [
                _cel(
                    f"type(self) == int ? self >= 0 : self.matches(r'{PERCENT_PATTERN}')",
                    "must be a non-negative integer or a percentage like '25%'",
                )
            ],
        }
    ),
]


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a non-negative integer or a percentage like '25%'")
    elif not re.fullmatch(PERCENT_PATTERN, value):
        raise ValueError("must be a non-negative integer or a percentage like '25%'")
    return value


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# ----------------------------------------------------------------------------------- spec


class ModelRef(_Model):
    """One model artifact: what a Deployment runs. Changing any field rolls the pods."""

    uri: str
    version: str
    sha256: str | None = None

    def digest(self) -> str:
        """A short stable hash of the reference (pod template annotation, rollout identity)."""
        text = f"{self.uri}\n{self.version}\n{self.sha256 or ''}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class CacheSpec(_Model):
    """A digest-keyed artifact cache shared across pods, so a scale-up need not fetch again."""

    model_config = ConfigDict(
        json_schema_extra=_cel_field(
            _cel(
                "has(self.claimName) != has(self.hostPath)",
                "set exactly one of claimName and hostPath",
            )
        )
    )

    claim_name: str | None = Field(
        default=None, pattern=DNS1123_SUBDOMAIN, max_length=253, description="a ReadWriteMany PVC"
    )
    host_path: str | None = Field(
        default=None,
        pattern=r"^/",
        max_length=4096,
        description="a node-local directory (not allowed under the restricted Pod Security level)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheSpec:
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError("set exactly one of claimName and hostPath")
        return self


class ModelSpec(_Model):
    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description="file:///path, /path, https://..., s3://bucket/prefix or pvc://claim/path",
    )
    version: str = Field(
        pattern=VERSION_PATTERN,
        max_length=63,
        description="the model's version label; changing it (or uri, sha256) starts a rollout",
    )
    sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="expected sha256 of the artifact's manifest",
    )
    credentials_secret: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="Secret whose keys (AWS_*, KUBESCRIBE_HTTP_BEARER_TOKEN) the fetch gets as env",
    )
    cache: CacheSpec | None = None

    def ref(self) -> ModelRef:
        return ModelRef(uri=self.uri, version=self.version, sha256=self.sha256)


class BatchingSpec(_Model):
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_delay_ms: int = Field(default=10, ge=0, le=10_000)


class ResourceRequirements(_Model):
    requests: dict[str, Quantity] | None = Field(
        default=None, json_schema_extra={"maxProperties": 16}
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, json_schema_extra={"maxProperties": 16}
    )

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, value: dict[str, int | str] | None) -> dict[str, int | str] | None:

        for key, quantity in (value or {}).items():
            if isinstance(quantity, str) and not re.fullmatch(QUANTITY_PATTERN, quantity):
                raise ValueError(f"{key}: {quantity!r} is not a Kubernetes quantity")
        return value


class EnvVar(_Model):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )


class RuntimeSpec(_Model):
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=1024)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    device: Literal["cpu", "gpu"] = "cpu"
    gpus: int = Field(default=1, ge=1, le=16, description="GPUs per pod when device is gpu")
    model_file: str = Field(
        default="model.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$", description="e.g. model.int8.onnx"
    )
    threads: int = Field(
        default=0, ge=0, le=256, description="ONNX intra-op threads (0: automatic)"
    )
    drain_timeout_seconds: int = Field(
        default=30, ge=0, le=3600, description="on shutdown, longest wait for accepted requests"
    )
    resources: ResourceRequirements | None = None
    batching: BatchingSpec = Field(default=BatchingSpec(), json_schema_extra={"default": {}})
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra=_cel_field(
            _cel(
                f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
                "runtime.env may not set variables the operator renders: "
                + ", ".join(RESERVED_ENV),
            ),
            _cel(
                "self.all(e, !e.name.startsWith('KUBESCRIBE_') || "
                f"e.name in {_cel_list(RESERVED_ENV + TUNABLE_ENV)})",
                "runtime.env has a KUBESCRIBE_ variable the runtime does not know "
                "(see docs/runtime-config.md)",
            ),
        ),
    )

    @field_validator("env")
    @classmethod
    def _no_reserved(cls, env: list[EnvVar]) -> list[EnvVar]:
        reserved = sorted({e.name for e in env} & set(RESERVED_ENV))
        if reserved:
            raise ValueError(
                "runtime.env may not set variables the operator renders: " + ", ".join(reserved)
            )
        unknown = sorted(
            e.name for e in env if e.name.startswith("KUBESCRIBE_") and e.name not in TUNABLE_ENV
        )
        if unknown:
            raise ValueError(
                f"runtime.env: the runtime does not know {', '.join(unknown)} "
                "(see docs/runtime-config.md)"
            )
        return env


class AutoscalingSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_field(
            _cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas"),
            _cel(
                "has(self.targetCPUUtilization) || has(self.targetRequestsInFlight)",
                "set targetCPUUtilization and/or targetRequestsInFlight",
            ),
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization: int | None = Field(
        default=None, ge=1, le=100, alias="targetCPUUtilization", description="average CPU, percent"
    )
    target_requests_in_flight: int | None = Field(
        default=None, ge=1, le=10_000, description="average in-flight requests per pod"
    )
    requests_in_flight_metric: str = Field(
        default="kubescribe_requests_in_flight",
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        max_length=253,
        description="per-pod metric served by the Prometheus adapter",
    )
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        if self.target_cpu_utilization is None and self.target_requests_in_flight is None:
            raise ValueError("set targetCPUUtilization and/or targetRequestsInFlight")
        return self


class RolloutSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_field(
            _cel(
                "!((self.maxSurge == 0 || self.maxSurge == '0%') && "
                "(self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
                "maxSurge and maxUnavailable cannot both be 0",
            )
        )
    )

    max_surge: IntOrPercent = 1
    max_unavailable: IntOrPercent = 0
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86_400)
    auto_rollback: bool = True

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: int | str) -> int | str:
        return _check_int_or_percent(value)

    @model_validator(mode="after")
    def _not_both_zero(self) -> RolloutSpec:
        if _is_zero(self.max_surge) and _is_zero(self.max_unavailable):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0")
        return self


class ServiceSpec(_Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=80, ge=1, le=65535)
    annotations: dict[str, str] | None = None


class Toleration(_Model):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SchedulingSpec(_Model):
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    priority_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    runtime_class_name: str | None = Field(
        default=None,
        pattern=r"^$|" + DNS1123_SUBDOMAIN,
        max_length=253,
        description='for device gpu the default is "nvidia"; "" sets none',
    )


class ServiceMonitorSpec(_Model):
    enabled: bool = False
    interval: str = Field(default="30s", pattern=r"^([0-9]+(ms|s|m|h))+$")
    labels: dict[str, str] | None = None


class MonitoringSpec(_Model):
    service_monitor: ServiceMonitorSpec = Field(
        default=ServiceMonitorSpec(), json_schema_extra={"default": {}}
    )


CPU_TARGET_MESSAGE = (
    "autoscaling.targetCPUUtilization needs runtime.resources.requests.cpu "
    "(leave runtime.resources out to get the default request of 1 CPU)"
)


class SpeechModelSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_field(
            _cel(
                "!has(self.autoscaling) || !has(self.autoscaling.targetCPUUtilization) || "
                "!has(self.runtime.resources) || (has(self.runtime.resources.requests) && "
                "'cpu' in self.runtime.resources.requests)",
                CPU_TARGET_MESSAGE,
            )
        )
    )

    model: ModelSpec
    runtime: RuntimeSpec = Field(default=RuntimeSpec(), json_schema_extra={"default": {}})
    replicas: int = Field(default=1, ge=0, le=1000, description="used when autoscaling is not set")
    autoscaling: AutoscalingSpec | None = None
    rollout: RolloutSpec = Field(default=RolloutSpec(), json_schema_extra={"default": {}})
    service: ServiceSpec = Field(default=ServiceSpec(), json_schema_extra={"default": {}})
    scheduling: SchedulingSpec | None = None
    monitoring: MonitoringSpec = Field(default=MonitoringSpec(), json_schema_extra={"default": {}})

    @model_validator(mode="after")
    def _cpu_target_needs_a_cpu_request(self) -> SpeechModelSpec:
        scaling, resources = self.autoscaling, self.runtime.resources
        if scaling is None or scaling.target_cpu_utilization is None or resources is None:
            return self
        if "cpu" not in (resources.requests or {}):
            raise ValueError(CPU_TARGET_MESSAGE)
        return self


NAME_RULE = _cel(
    f"size(self.metadata.name) <= 63 && self.metadata.name.matches(r'{DNS1035_LABEL}')",
    "metadata.name must be a DNS-1035 label of at most 63 characters (it names the Service)",
)


class SpeechModel(_Model):
    """A whole manifest, as `kubescribe render` reads it."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["kubescribe.io/v1alpha1"]
    kind: Literal["SpeechModel"]
    metadata: dict[str, Any]
    spec: SpeechModelSpec

    @field_validator("metadata")
    @classmethod
    def _name(cls, metadata: dict[str, Any]) -> dict[str, Any]:

        name = metadata.get("name")
        if not isinstance(name, str) or len(name) > 63 or not re.fullmatch(DNS1035_LABEL, name):
            raise ValueError(NAME_RULE["message"])
        return metadata

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")


# --------------------------------------------------------------------------------- status

ConditionType = Literal["Ready", "Reconciling", "Stalled"]
Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
RolloutResult = Literal["InProgress", "Succeeded", "Failed", "RolledBack", "Superseded"]


class Condition(_Model):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class HistoryEntry(_Model):
    version: str
    uri: str
    sha256: str | None = None
    started: str
    finished: str | None = None
    result: RolloutResult
    message: str | None = None

    def ref(self) -> ModelRef:
        return ModelRef(uri=self.uri, version=self.version, sha256=self.sha256)


class SpeechModelStatus(_Model):
    model_config = ConfigDict(extra="ignore")  # kopf keeps its own keys under status

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    phase: Phase | None = None
    current_version: str | None = None
    target_version: str | None = None
    last_known_good: ModelRef | None = None
    failed_version: str | None = None
    failed_model: ModelRef | None = Field(
        default=None, description="the model ref that failed; not retried until the spec changes"
    )
    failed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    updated_replicas: int | None = None
    selector: str | None = None
    endpoint: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def parse_spec(spec: Any) -> SpeechModelSpec:
    """Validate a manifest's spec, mapping pydantic's error to one readable line."""
    try:
        return SpeechModelSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(f"invalid SpeechModel spec: {format_validation_error(exc)}") from exc


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
