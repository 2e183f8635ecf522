"""The SpeechModel API's identity and what its spec and status models share.

Contract 1 (`kubescribe.io/v1alpha1`, kind `SpeechModel`) is written as pydantic models in
`kubescribe_operator.spec` (what users write) and `kubescribe_operator.status` (what the operator
writes); `kubescribe_operator.crd` generates the CRD's structural OpenAPI schema from them. This
module holds the group/version/kind, the wire conventions (snake_case in Python, camelCase on the
wire), the CEL helpers and `ModelRef`, the one type both sides use.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "kubescribe.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeechModel"
PLURAL = "speechmodels"
SINGULAR = "speechmodel"
SHORT_NAMES = ["sm", "stt"]
CATEGORIES = ["kubescribe", "ml"]

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


def cel_rule(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


def cel_field(*rules: dict[str, str], **schema: Any) -> dict[str, Any]:
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
                cel_rule(
                    f"type(self) == int ? self >= 0 : self.matches(r'{PERCENT_PATTERN}')",
                    "must be a non-negative integer or a percentage like '25%'",
                )
            ],
        }
    ),
]


def check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a non-negative integer or a percentage like '25%'")
    elif not re.fullmatch(PERCENT_PATTERN, value):
        raise ValueError("must be a non-negative integer or a percentage like '25%'")
    return value


def is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ModelRef(ApiModel):
    """One model artifact: what a Deployment runs. Changing any field rolls the pods."""

    uri: str
    version: str
    sha256: str | None = None

    def digest(self) -> str:
        """A short stable hash of the reference (pod template annotation, rollout identity)."""
        text = f"{self.uri}\n{self.version}\n{self.sha256 or ''}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]
