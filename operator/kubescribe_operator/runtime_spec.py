"""Contract 1, the spec's `runtime` part: the image, device, resources, batching and the
environment of the runtime pods (what `kubescribe_operator.pod` renders). Pure models; the CRD
is generated from them with the rest of the spec (`kubescribe_operator.spec`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from kubescribe_operator import k8s_schema
from kubescribe_operator.api import (
    DNS1123_SUBDOMAIN,
    ENV_NAME_PATTERN,
    QUANTITY_PATTERN,
    ApiModel,
    Quantity,
    cel_field,
    cel_rule,
)

# The runtime images (docs/images.md) the operator picks when runtime.image is not set: the CUDA
# one (runtime/Dockerfile) for device gpu; the CPU one (runtime/Dockerfile.cpu, no CUDA, a
# fraction of the size) for device cpu and for every model's fetch init container.
DEFAULT_IMAGE = "ghcr.io/kubescribe/runtime:0.1.0"
DEFAULT_CPU_IMAGE = "ghcr.io/kubescribe/runtime-cpu:0.1.0"
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
    "KUBESCRIBE_API_KEYS_FILE",
    "KUBESCRIBE_SCRATCH_DIR",
    # From spec.routing (catalog.py): the model's names, and the catalogue behind its Gateway.
    "KUBESCRIBE_SERVED_MODEL_NAMES",
    "KUBESCRIBE_MODEL_CATALOG",
    # From spec.qualityGate (quality_gate.py).
    "KUBESCRIBE_QUALITY_GATE",
    "KUBESCRIBE_QUALITY_GATE_WER_TOLERANCE",
)
# The runtime's other settings (docs/runtime-config.md): a user may set these in runtime.env;
# any other KUBESCRIBE_* name is a typo the runtime would silently ignore.
TUNABLE_ENV = (
    "KUBESCRIBE_MODEL_FILE",
    "KUBESCRIBE_GPU_ID",
    "KUBESCRIBE_ALLOW_CPU_FALLBACK",
    "KUBESCRIBE_EXIT_ON_LOAD_FAILURE",
    "KUBESCRIBE_THREADS",
    "KUBESCRIBE_THREAD_SPINNING",
    "KUBESCRIBE_CUDNN_CONV_ALGO_SEARCH",
    "KUBESCRIBE_GPU_MEM_LIMIT_MB",
    "KUBESCRIBE_IO_BINDING",
    "KUBESCRIBE_HTTP_THREADS",
    "KUBESCRIBE_MAX_BATCH_SIZE",
    "KUBESCRIBE_LIVE_BATCH_SECONDS",
    "KUBESCRIBE_MAX_DELAY_MS",
    "KUBESCRIBE_BATCH_WAIT_FULL_DELAY",
    "KUBESCRIBE_MAX_QUEUE",
    "KUBESCRIBE_MAX_REQUESTS",
    "KUBESCRIBE_MAX_BACKLOG_SECONDS",
    "KUBESCRIBE_SPOOL_THRESHOLD_MB",
    "KUBESCRIBE_STALL_TIMEOUT_S",
    "KUBESCRIBE_REQUEST_TIMEOUT_S",
    "KUBESCRIBE_MAX_UPLOAD_MB",
    "KUBESCRIBE_HEADER_TIMEOUT_S",
    "KUBESCRIBE_BODY_MIN_RATE_KB",
    "KUBESCRIBE_MAX_CONNECTIONS",
    "KUBESCRIBE_MAX_AUDIO_SECONDS",
    "KUBESCRIBE_MAX_AUDIO_SECONDS_PER_MB",
    "KUBESCRIBE_WINDOW_SECONDS",
    "KUBESCRIBE_WINDOW_OVERLAP_SECONDS",
    "KUBESCRIBE_VAD",
    "KUBESCRIBE_MAX_SESSIONS",
    "KUBESCRIBE_SESSION_IDLE_TIMEOUT_S",
    "KUBESCRIBE_SESSION_MAX_DURATION_S",
    "KUBESCRIBE_MAX_APPEND_KB",
    "KUBESCRIBE_PARTIAL_INTERVAL_MS",
    "KUBESCRIBE_MAX_TURN_SECONDS",
    "KUBESCRIBE_SESSION_MAX_BACKLOG_SECONDS",
    "KUBESCRIBE_SESSION_CONFIGURE_TIMEOUT_S",
    "KUBESCRIBE_DRAIN_TIMEOUT_S",
    "KUBESCRIBE_LOG_LEVEL",
    "KUBESCRIBE_LOG_FORMAT",
    "KUBESCRIBE_API_KEYS",
)


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


class BatchingSpec(ApiModel):
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_delay_ms: int = Field(default=10, ge=0, le=10_000)


class ResourceRequirements(ApiModel):
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


class EnvVar(ApiModel):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra=k8s_schema.schema("EnvVarSource", "core/v1 EnvVarSource"),
    )

    @field_validator("value_from")
    @classmethod
    def _value_from(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else k8s_schema.check("EnvVarSource", value)


GPUS_MESSAGE = "runtime.gpus applies to device gpu only (a cpu pod gets no GPU)"


class RuntimeSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra=cel_field(
            # gpus: 1 is accepted on cpu: the schema defaulted it on every model before.
            cel_rule("self.device == 'gpu' || !has(self.gpus) || self.gpus == 1", GPUS_MESSAGE)
        )
    )

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="the runtime image of both containers; default: by device, the CUDA image "
        "for gpu, the CPU image for cpu (and the CPU image for the fetch init container)",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    device: Literal["cpu", "gpu"] = "cpu"
    gpus: int | None = Field(
        default=None, ge=1, le=16, description="GPUs per pod, device gpu only (default 1)"
    )
    model_file: str = Field(
        default="model.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$", description="e.g. model.int8.onnx"
    )
    threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="ONNX intra-op threads (0: the CPU limit, else the CPU request, rounded up)",
    )
    drain_timeout_seconds: int = Field(
        default=30, ge=0, le=3600, description="on shutdown, longest wait for accepted requests"
    )
    resources: ResourceRequirements | None = None
    batching: BatchingSpec = Field(default=BatchingSpec(), json_schema_extra={"default": {}})
    api_key_secret: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="Secret whose entries are the API keys callers must present "
        "(Authorization: Bearer <key>); mounted into the runtime, which re-reads it on change",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        # One entry per name, refused by the API server with the entry's path (a duplicate name
        # would otherwise pass here and make the Deployment's server-side apply fail).
        json_schema_extra=cel_field(
            cel_rule(
                f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
                "runtime.env may not set variables the operator renders: "
                + ", ".join(RESERVED_ENV),
            ),
            cel_rule(
                "self.all(e, !e.name.startsWith('KUBESCRIBE_') || "
                f"e.name in {_cel_list(RESERVED_ENV + TUNABLE_ENV)})",
                "runtime.env has a KUBESCRIBE_ variable the runtime does not know "
                "(see docs/runtime-config.md)",
            ),
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    )

    @field_validator("env")
    @classmethod
    def _no_reserved(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [e.name for e in env]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError("runtime.env has duplicate names: " + ", ".join(duplicates))
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

    @model_validator(mode="after")
    def _gpus_need_a_gpu(self) -> RuntimeSpec:
        if self.device != "gpu" and self.gpus not in (None, 1):
            raise ValueError(GPUS_MESSAGE)
        return self

    def gpu_count(self) -> int:
        return self.gpus or 1

    def runtime_image(self) -> str:
        """The image of the runtime container: runtime.image, else the default for the device."""
        return self.image or (DEFAULT_IMAGE if self.device == "gpu" else DEFAULT_CPU_IMAGE)

    def fetch_image(self) -> str:
        """The image of the fetch init container: a download needs no CUDA."""
        return self.image or DEFAULT_CPU_IMAGE
