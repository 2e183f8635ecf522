"""Contract 1, the spec's `pod` part: what a platform needs on the model pods beyond the
runtime — the ServiceAccount (a cloud identity for the fetch: IRSA, EKS Pod Identity, GKE
Workload Identity), image pull Secrets, extra labels and annotations (cost labels, a service
mesh's injection switch), and whether the pods pin their user (the image's 10001) or leave it
to the platform (OpenShift's restricted-v2 SCC assigns a UID and fsGroup per namespace). Pure
models; `kubescribe_operator.pod` renders them.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from kubescribe_operator.api import DNS1123_SUBDOMAIN, ApiModel, cel_field, cel_rule

# The labels that select and describe the pods (kubescribe_operator.naming): the operator sets
# them, a user's pod.labels may not.
RESERVED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
RESERVED_PREFIX = "kubescribe.io/"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_RESERVED_LABELS_CEL = "[" + ",".join(f"'{k}'" for k in RESERVED_LABELS) + "]"
LABELS_MESSAGE = (
    "pod.labels may not set the labels the operator sets ("
    + ", ".join(RESERVED_LABELS)
    + ", kubescribe.io/*)"
)
ANNOTATIONS_MESSAGE = "pod.annotations may not set kubescribe.io/* (the operator's)"


class PodOptions(ApiModel):
    service_account_name: str | None = Field(
        default=None,
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
        description="the ServiceAccount the pods run as (default: the namespace's default); "
        "annotate it for a cloud identity (IRSA's eks.amazonaws.com/role-arn, GKE's "
        "iam.gke.io/gcp-service-account) and the fetch uses it",
    )
    automount_service_account_token: bool = Field(
        default=False,
        description="mount the ServiceAccount's API token: only for a platform whose identity "
        "agent reads it (IRSA and EKS Pod Identity project their own token; GKE uses the "
        "metadata server)",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"items": {"type": "string", "pattern": DNS1123_SUBDOMAIN}},
        description="names of docker-registry Secrets for the runtime image",
    )
    labels: dict[str, str] | None = Field(
        default=None,
        json_schema_extra={
            "maxProperties": 32,
            "additionalProperties": {
                "type": "string",
                "maxLength": 63,
                "pattern": LABEL_VALUE_PATTERN,
            },
            **cel_field(
                cel_rule(
                    f"self.all(k, !(k in {_RESERVED_LABELS_CEL}) && "
                    f"!k.startsWith('{RESERVED_PREFIX}'))",
                    LABELS_MESSAGE,
                )
            ),
        },
        description="extra labels of the pods (changing them rolls the pods)",
    )
    annotations: dict[str, str] | None = Field(
        default=None,
        json_schema_extra={
            "maxProperties": 64,
            **cel_field(
                cel_rule(f"self.all(k, !k.startsWith('{RESERVED_PREFIX}'))", ANNOTATIONS_MESSAGE)
            ),
        },
        description="extra annotations of the pods, e.g. sidecar.istio.io/inject "
        "(changing them rolls the pods)",
    )
    fixed_user: bool = Field(
        default=True,
        description="run as the image's user 10001 (runAsUser, runAsGroup, fsGroup); false: "
        "leave them to the platform, as OpenShift's restricted-v2 SCC requires",
    )

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str] | None) -> dict[str, str] | None:
        bad = [k for k in labels or {} if k in RESERVED_LABELS or k.startswith(RESERVED_PREFIX)]
        if bad:
            raise ValueError(LABELS_MESSAGE)
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str] | None) -> dict[str, str] | None:
        if any(k.startswith(RESERVED_PREFIX) for k in annotations or {}):
            raise ValueError(ANNOTATIONS_MESSAGE)
        return annotations
