"""The Kubernetes kinds the operator writes (its children) and watches, and its field manager.

The lowest layer: the builders name these kinds, ``kube`` turns them into API paths, ``cache``
watches them. Pure data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

FIELD_MANAGER = "kubescribe-operator"


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    # A child the model serves without (monitoring): its kind missing from the cluster is a
    # warning on the SpeechModel, never a failure.
    optional: bool = False

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def collection(self, namespace: str) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{quote(namespace)}/{self.plural}"

    def path(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{quote(name)}"


# Every kind the builders may produce, in the order they are built and applied; the ones a
# SpeechModel no longer needs are deleted.
CHILD_KINDS: dict[tuple[str, str], ChildKind] = {
    (k.api_version, k.kind): k
    for k in (
        ChildKind("v1", "Service", "services"),
        ChildKind("apps/v1", "Deployment", "deployments"),
        ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors", optional=True),
        # Gateway API (spec.routing): without its CRDs the model serves through its Service
        # and its Routed condition says why it is not routed (httproute.py, routing.py).
        ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", optional=True),
    )
}
DEPLOYMENT = CHILD_KINDS["apps/v1", "Deployment"]
# Watched for a rollout's progress, never written.
REPLICASETS = ChildKind("apps/v1", "ReplicaSet", "replicasets")
PODS = ChildKind("v1", "Pod", "pods")


def kind_of(obj: Mapping[str, Any]) -> ChildKind:
    """The child kind of a built or watched object."""
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in CHILD_KINDS:
        raise ValueError(f"the operator does not manage {key[1]} ({key[0]}) children")
    return CHILD_KINDS[key]
