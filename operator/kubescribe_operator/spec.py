"""Contract 1, the spec: what users write in a SpeechModel (`kubescribe.io/v1alpha1`).

These models are the single source of the spec's schema: `kubescribe_operator.crd` generates the
CRD (defaults, validation, CEL rules) from them, and a test checks that the committed
`crds/speechmodel.yaml` equals the generated one. Every validation rule is written twice on
purpose, once for pydantic (python validators) and once for the API server
(`x-kubernetes-validations` CEL rules, carried in `json_schema_extra`); the tests evaluate the
CEL rules and check both sides refuse the same bad manifests.

Interface used by the operator process: `parse_spec(body["spec"])` (or
`SpeechModelSpec.model_validate`), and `spec.model.ref()`, the wanted `ModelRef`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kubescribe.errors import KubescribeError
from kubescribe_operator import k8s_schema
from kubescribe_operator.api import (
    DNS1035_LABEL,
    DNS1123_SUBDOMAIN,
    QUANTITY_PATTERN,
    SHA256_PATTERN,
    URI_PATTERN,
    VERSION_PATTERN,
    ApiModel,
    IntOrPercent,
    ModelRef,
    Quantity,
    cel_field,
    cel_rule,
    check_int_or_percent,
    is_zero,
)
from kubescribe_operator.pod_options import PodOptions
from kubescribe_operator.runtime_spec import RuntimeSpec
from kubescribe_operator.spec_traffic import (
    CANARY_NEEDS_STRATEGY,
    CANARY_NEEDS_STRATEGY_RULE,
    STRATEGY_DESCRIPTION,
    CanarySpec,
    QualityGateSpec,
    RolloutStrategy,
    RoutingSpec,
)

# Room for an artifact of up to ~1 B parameters in fp16 (model.storage).
DEFAULT_ARTIFACT_STORAGE = "2Gi"


class SpecError(KubescribeError):
    """A SpeechModel manifest does not follow the schema."""

    exit_code = 2


# The only node directories a hostPath cache may use (docs/user-guide.md): a root init step
# chowns the directory to the runtime user, so anything else (`/`, /etc, /var/lib/kubelet) would
# hand node directories to whoever may create SpeechModels. No `.`/`..` segments.
HOST_PATH_ROOTS = ("/var/cache/kubescribe", "/var/lib/kubescribe")
HOST_PATH_PATTERN = r"^/var/(cache|lib)/kubescribe(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"


class CacheSpec(ApiModel):
    """A digest-keyed artifact cache shared across pods, so a scale-up need not fetch again."""

    model_config = ConfigDict(
        json_schema_extra=cel_field(
            cel_rule(
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
        pattern=HOST_PATH_PATTERN,
        max_length=1024,
        description="a node-local directory under /var/cache/kubescribe or /var/lib/kubescribe "
        "(nothing else: the pod makes it writable as root; not allowed under the restricted Pod "
        "Security level)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CacheSpec:
        if (self.claim_name is None) == (self.host_path is None):
            raise ValueError("set exactly one of claimName and hostPath")
        return self


# A `..` path segment: `file:///../../etc/passwd`, `pvc://claim/../other`.
DOT_DOT_RULE = cel_rule(
    "!self.matches('(^|/)[.][.](/|$)')",
    "model.uri may not contain '..' path segments",
)


class ModelSpec(ApiModel):
    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description="file:///path, /path, https://..., s3://bucket/prefix or pvc://claim/path",
        json_schema_extra=cel_field(DOT_DOT_RULE),
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
    storage: Quantity = Field(
        default=DEFAULT_ARTIFACT_STORAGE,
        description="room for the artifact on the node: the artifact volume's sizeLimit and "
        "the pods' ephemeral-storage request (a pod whose artifact outgrows it is evicted)",
    )

    @field_validator("storage")
    @classmethod
    def _storage_is_a_quantity(cls, value: int | str) -> int | str:
        if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity")
        return value

    @field_validator("uri")
    @classmethod
    def _no_dot_dot(cls, uri: str) -> str:
        if re.search(r"(^|/)\.\.(/|$)", uri):
            raise ValueError(DOT_DOT_RULE["message"])
        return uri

    def ref(self) -> ModelRef:
        return ModelRef(uri=self.uri, version=self.version, sha256=self.sha256)


# The HorizontalPodAutoscaler's default target, which `kubectl autoscale` also uses.
DEFAULT_CPU_TARGET = 80


class AutoscalingSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel_field(
            cel_rule("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas"),
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(ge=1, le=1000)
    target_cpu_utilization: int | None = Field(
        default=None,
        ge=1,
        le=100,
        alias="targetCPUUtilization",
        description=f"average CPU, percent ({DEFAULT_CPU_TARGET} when no target is set)",
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
        return self

    def cpu_target(self) -> int | None:
        """The CPU target the HPA gets: the one set, else the HPA's own default (as
        `kubectl autoscale` gives it) when no target is set at all."""
        if self.target_cpu_utilization is None and self.target_requests_in_flight is None:
            return DEFAULT_CPU_TARGET
        return self.target_cpu_utilization


class RolloutSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel_field(
            cel_rule(
                # has(): the API server also checks this rule on the schema's default `{}`.
                "!(has(self.maxSurge) && has(self.maxUnavailable) && "
                "(self.maxSurge == 0 || self.maxSurge == '0%') && "
                "(self.maxUnavailable == 0 || self.maxUnavailable == '0%'))",
                "maxSurge and maxUnavailable cannot both be 0",
            ),
            CANARY_NEEDS_STRATEGY_RULE,
        )
    )

    strategy: RolloutStrategy = Field(default="Rolling", description=STRATEGY_DESCRIPTION)
    canary: CanarySpec | None = Field(
        default=None, description="steps and analysis (strategy Canary; defaults when unset)"
    )
    max_surge: IntOrPercent = 1
    max_unavailable: IntOrPercent = 0
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86_400)
    auto_rollback: bool = True

    @field_validator("max_surge", "max_unavailable")
    @classmethod
    def _int_or_percent(cls, value: int | str) -> int | str:
        return check_int_or_percent(value)

    @model_validator(mode="after")
    def _not_both_zero(self) -> RolloutSpec:
        if is_zero(self.max_surge) and is_zero(self.max_unavailable):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0")
        return self

    @model_validator(mode="after")
    def _canary_needs_strategy(self) -> RolloutSpec:
        if self.canary is not None and self.strategy != "Canary":
            raise ValueError(CANARY_NEEDS_STRATEGY)
        return self

    def canary_settings(self) -> CanarySpec | None:
        """The canary's steps and analysis when the strategy is Canary (defaults when unset)."""
        if self.strategy != "Canary":
            return None
        return self.canary or CanarySpec()


class ServiceSpec(ApiModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=80, ge=1, le=65535)
    annotations: dict[str, str] | None = None


class Toleration(ApiModel):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class SchedulingSpec(ApiModel):
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    affinity: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra=k8s_schema.schema("Affinity", "the pods' affinity (core/v1 Affinity)"),
    )
    priority_class_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    runtime_class_name: str | None = Field(
        default=None,
        pattern=r"^$|" + DNS1123_SUBDOMAIN,
        max_length=253,
        description='for device gpu the default is "nvidia"; "" sets none',
    )

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else k8s_schema.check("Affinity", value)


class ServiceMonitorSpec(ApiModel):
    enabled: bool = False
    interval: str = Field(default="30s", pattern=r"^([0-9]+(ms|s|m|h))+$")
    labels: dict[str, str] | None = None


class MonitoringSpec(ApiModel):
    service_monitor: ServiceMonitorSpec = Field(
        default=ServiceMonitorSpec(), json_schema_extra={"default": {}}
    )


SCALE_WITH_AUTOSCALING_MESSAGE = (
    "spec.replicas is not used while spec.autoscaling is set (the HorizontalPodAutoscaler keeps "
    "the replicas between autoscaling.minReplicas and maxReplicas): change those instead"
)
HOST_PATH_USER_MESSAGE = (
    "model.cache.hostPath needs pod.fixedUser: the cache is made writable for the image's user"
)
CPU_TARGET_MESSAGE = (
    "autoscaling.targetCPUUtilization (80 when no target is set) needs "
    "runtime.resources.requests.cpu (leave runtime.resources out to get the default request "
    "of 1 CPU)"
)


class SpeechModelSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel_field(
            cel_rule(
                "!has(self.autoscaling) || (!has(self.autoscaling.targetCPUUtilization) && "
                "has(self.autoscaling.targetRequestsInFlight)) || "
                "!has(self.runtime.resources) || (has(self.runtime.resources.requests) && "
                "'cpu' in self.runtime.resources.requests)",
                CPU_TARGET_MESSAGE,
            ),
            cel_rule(
                "!has(self.model.cache) || !has(self.model.cache.hostPath) || "
                "!has(self.pod) || !has(self.pod.fixedUser) || self.pod.fixedUser",
                HOST_PATH_USER_MESSAGE,
            ),
            # A transition rule (updates only), so it also refuses `kubectl scale`, which would
            # otherwise succeed and change nothing.
            cel_rule(
                "!has(self.autoscaling) || !has(oldSelf.autoscaling) || "
                "self.replicas == oldSelf.replicas",
                SCALE_WITH_AUTOSCALING_MESSAGE,
            ),
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
    pod: PodOptions = Field(default=PodOptions(), json_schema_extra={"default": {}})
    routing: RoutingSpec | None = Field(
        default=None, description="reach the model through shared Gateways (Gateway API)"
    )
    quality_gate: QualityGateSpec = Field(
        default=QualityGateSpec(), json_schema_extra={"default": {}}
    )

    @model_validator(mode="after")
    def _host_path_needs_fixed_user(self) -> SpeechModelSpec:
        cache = self.model.cache
        if cache is not None and cache.host_path is not None and not self.pod.fixed_user:
            raise ValueError(HOST_PATH_USER_MESSAGE)
        return self

    @model_validator(mode="after")
    def _cpu_target_needs_a_cpu_request(self) -> SpeechModelSpec:
        scaling, resources = self.autoscaling, self.runtime.resources
        if scaling is None or scaling.cpu_target() is None or resources is None:
            return self
        if "cpu" not in (resources.requests or {}):
            raise ValueError(CPU_TARGET_MESSAGE)
        return self


NAME_RULE = cel_rule(
    f"size(self.metadata.name) <= 63 && self.metadata.name.matches(r'{DNS1035_LABEL}')",
    "metadata.name must be a DNS-1035 label of at most 63 characters (it names the Service)",
)


class SpeechModel(ApiModel):
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
