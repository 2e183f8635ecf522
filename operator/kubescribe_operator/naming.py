"""Names, labels and ownership of the objects the operator makes for a SpeechModel. Pure.

Every child carries the `app.kubernetes.io/*` labels (`common_labels`) and an ownerReference to
its SpeechModel; the pods are selected by `selector_labels`, which never change.
"""

from __future__ import annotations

from typing import Any

from kubescribe_operator.api import API_VERSION, KIND
from kubescribe_operator.kinds import FIELD_MANAGER as FIELD_MANAGER
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL_VERSION = "kubescribe.io/model-version"
ANNOTATION_MODEL_REF = "kubescribe.io/model-ref"  # ModelRef.digest(): changes roll the pods
ANNOTATION_MODEL_URI = "kubescribe.io/model-uri"
ANNOTATION_MODEL_SHA256 = "kubescribe.io/model-sha256"


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select a SpeechModel's pods (never change: selectors are immutable)."""
    return {LABEL_NAME: "kubescribe", LABEL_INSTANCE: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        LABEL_COMPONENT: "runtime",
        LABEL_PART_OF: "kubescribe",
        LABEL_MANAGED_BY: FIELD_MANAGER,
    }


def endpoint(name: str, namespace: str, spec: SpeechModelSpec) -> str:
    return f"http://{name}.{namespace}.svc:{spec.service.port}"


def child_identity(obj: Obj) -> tuple[str, str, str]:
    """(apiVersion, kind, name): how the operator matches a built child with an existing one."""
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def owner_reference(name: str, uid: str) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(name: str, namespace: str, uid: str, **extra: Any) -> Obj:
    return {
        "name": name,
        "namespace": namespace,
        "labels": common_labels(name),
        "ownerReferences": [owner_reference(name, uid)],
        **extra,
    }
