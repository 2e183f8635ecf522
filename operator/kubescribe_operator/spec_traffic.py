"""Contract 1, the traffic part of the spec: how clients reach a SpeechModel through a shared
Gateway, how a new version takes traffic (rolling or canary), and the quality gate it passes first.

`spec.routing` names the Gateway API Gateways (`parentRefs`) the model joins and the names and
languages clients use for it; the operator renders standard `HTTPRoute`s from it (it never runs a
proxy). `spec.rollout.strategy: Canary` runs a new version beside the stable one and moves traffic
step by step, judged on the runtime's own metrics. `spec.qualityGate` makes every new version's
pods transcribe the reference clips its artifact carries before they take traffic.

Every rule is written for pydantic and, as CEL or schema keywords, for the API server, like the
rest of `kubescribe_operator.spec`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from kubescribe_operator.api import DNS1123_SUBDOMAIN, ApiModel, cel_rule

# What clients may put in `model`: OpenAI model ids look like `whisper-1`, `gpt-4o-transcribe`.
# Also a path segment (`/models/<name>/v1/...`) and an HTTP header value, so no `/` or spaces.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# A language as the transcription API's `language` field carries it: ISO 639-1/3, optional region.
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"
# Gateway API's SectionName.
SECTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

ModelName = Annotated[str, Field(pattern=MODEL_NAME_PATTERN, max_length=63)]
Language = Annotated[str, Field(pattern=LANGUAGE_PATTERN, max_length=12)]


class ParentRef(ApiModel):
    """A Gateway the model's HTTPRoutes attach to (Gateway API `ParentReference`, Gateways only)."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253)
    namespace: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=63,
        description="the Gateway's namespace (default: the SpeechModel's); the Gateway's "
        "listener must allow routes from this namespace",
    )
    section_name: str | None = Field(
        default=None, pattern=SECTION_NAME_PATTERN, max_length=253, description="one listener"
    )
    port: int | None = Field(default=None, ge=1, le=65535)


class RoutingSpec(ApiModel):
    """How clients reach the model through a shared endpoint (docs/user-guide.md, "One endpoint
    for a multi-language line")."""

    parent_refs: list[ParentRef] = Field(
        min_length=1,
        max_length=8,
        description="the Gateways whose listeners serve this model's HTTPRoute",
    )
    names: list[ModelName] = Field(
        default_factory=list,
        # An HTTPRoute holds 16 rules; each name (and metadata.name) takes one (httproute.py).
        max_length=14,
        description="names clients may put in `model` besides metadata.name (e.g. support-es); "
        "matched on the x-kubescribe-model header, the ?model= query (Realtime) and the "
        "/models/<name> path prefix",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    default_for_languages: list[Language] = Field(
        default_factory=list,
        max_length=16,
        description="languages for which this model serves requests that name no model "
        "(x-kubescribe-language header, or the multipart `language` field through a "
        "body-to-header filter)",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("names", "default_for_languages")
    @classmethod
    def _a_set(cls, values: list[str]) -> list[str]:
        # The API server refuses the same (x-kubernetes-list-type: set).
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ValueError(f"duplicate entries {duplicates}")
        return values


class CanaryStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="percent of the traffic the new version gets")
    pause_seconds: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="how long the step runs (and is analysed) before the next one",
    )


class CanaryAnalysis(ApiModel):
    """Thresholds each step is judged on, from the canary's own runtime metrics. A breach aborts
    the canary; a step that saw fewer than minRequests requests is judged on what it saw and says
    so."""

    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        max_length=2048,
        description="a Prometheus to query (its HTTP API); unset: the canary pods' /metrics",
    )
    max_error_ratio: float = Field(
        default=0.05, ge=0, le=1, description="server errors (5xx) / requests"
    )
    max_p95_latency_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="p95 request latency"
    )
    max_real_time_factor: float | None = Field(
        default=None, gt=0, le=100, description="compute seconds per audio second"
    )
    min_requests: int = Field(default=20, ge=0, le=1_000_000)


class CanarySpec(ApiModel):
    steps: list[CanaryStep] = Field(
        default_factory=lambda: [
            CanaryStep(weight=10, pause_seconds=60),
            CanaryStep(weight=50, pause_seconds=60),
        ],
        min_length=1,
        max_length=20,
        json_schema_extra={
            "default": [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}]
        },
    )
    analysis: CanaryAnalysis = Field(
        default_factory=CanaryAnalysis, json_schema_extra={"default": {}}
    )


CANARY_NEEDS_STRATEGY = "rollout.canary is only used with rollout.strategy: Canary"


CANARY_NEEDS_STRATEGY_RULE = cel_rule(
    "!has(self.canary) || (has(self.strategy) && self.strategy == 'Canary')",
    CANARY_NEEDS_STRATEGY,
)
STRATEGY_DESCRIPTION = (
    "Rolling: pods are replaced in place (maxSurge/maxUnavailable). Canary: the new version runs "
    "as a second Deployment and takes traffic by steps (HTTPRoute backendRef weights with "
    "spec.routing, else a share of the replicas behind the one Service)"
)
RolloutStrategy = Literal["Rolling", "Canary"]


class QualityGateSpec(ApiModel):
    """Before a new version takes traffic, its pods transcribe the reference clips the artifact
    carries (contract 2) and must stay within `werTolerance` of the WER its manifest declares for
    them; an artifact without reference clips skips the gate and says so."""

    enabled: bool = True
    wer_tolerance: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="absolute WER points a version may lose against its manifest's declared WER "
        "on its reference clips",
    )
