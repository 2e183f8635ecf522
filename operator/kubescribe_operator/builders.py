"""Pure builders: a validated SpeechModel spec -> the Kubernetes objects the operator owns.

No I/O and no clock: the same inputs always give the same dicts, so the operator can compare
what it would apply with what exists and write nothing when they agree.

`build_children(name, namespace, uid, spec, model_ref)` returns every child in apply order:
Service, Deployment, then the HorizontalPodAutoscaler, PodDisruptionBudget and ServiceMonitor
when the spec asks for them. `model_ref` is the artifact to run, which is the spec's model
except during a rollback, when it is the status's `lastKnownGood`. A kind missing from the list
(e.g. the PDB once replicas drop to 1) must be deleted: `CHILD_KINDS` names every kind the
operator may own.

The pod template is `kubescribe_operator.pod`, the names and labels `kubescribe_operator.naming`;
the names other modules read are re-exported here.
"""

from __future__ import annotations

from typing import Any

from kubescribe_operator import httproute
from kubescribe_operator.api import ModelRef
from kubescribe_operator.kinds import CHILD_KINDS as CHILD_KINDS
from kubescribe_operator.naming import (
    ANNOTATION_MODEL_REF as ANNOTATION_MODEL_REF,
)
from kubescribe_operator.naming import (
    ANNOTATION_MODEL_SHA256 as ANNOTATION_MODEL_SHA256,
)
from kubescribe_operator.naming import (
    ANNOTATION_MODEL_URI as ANNOTATION_MODEL_URI,
)
from kubescribe_operator.naming import (
    FIELD_MANAGER as FIELD_MANAGER,
)
from kubescribe_operator.naming import (
    LABEL_COMPONENT as LABEL_COMPONENT,
)
from kubescribe_operator.naming import (
    LABEL_INSTANCE as LABEL_INSTANCE,
)
from kubescribe_operator.naming import (
    LABEL_MANAGED_BY as LABEL_MANAGED_BY,
)
from kubescribe_operator.naming import (
    LABEL_MODEL_VERSION as LABEL_MODEL_VERSION,
)
from kubescribe_operator.naming import (
    LABEL_NAME as LABEL_NAME,
)
from kubescribe_operator.naming import (
    LABEL_PART_OF as LABEL_PART_OF,
)
from kubescribe_operator.naming import (
    child_identity as child_identity,
)
from kubescribe_operator.naming import (
    child_metadata,
)
from kubescribe_operator.naming import (
    common_labels as common_labels,
)
from kubescribe_operator.naming import (
    endpoint as endpoint,
)
from kubescribe_operator.naming import (
    owner_reference as owner_reference,
)
from kubescribe_operator.naming import (
    selector_labels as selector_labels,
)
from kubescribe_operator.naming import (
    selector_string as selector_string,
)
from kubescribe_operator.pod import (
    API_KEYS_DIR as API_KEYS_DIR,
)
from kubescribe_operator.pod import (
    ARTIFACT_DIR as ARTIFACT_DIR,
)
from kubescribe_operator.pod import (
    CACHE_DIR as CACHE_DIR,
)
from kubescribe_operator.pod import (
    HTTP_PORT as HTTP_PORT,
)
from kubescribe_operator.pod import (
    PORT_NAME,
)
from kubescribe_operator.pod import (
    PVC_ROOT as PVC_ROOT,
)
from kubescribe_operator.pod import (
    RUN_AS as RUN_AS,
)
from kubescribe_operator.pod import (
    SCRATCH_DIR as SCRATCH_DIR,
)
from kubescribe_operator.pod import (
    cpu_cores as cpu_cores,
)
from kubescribe_operator.pod import (
    pod_template as pod_template,
)
from kubescribe_operator.pod import (
    runtime_env as runtime_env,
)
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]


def build_deployment(
    name: str, namespace: str, uid: str, spec: SpeechModelSpec, model_ref: ModelRef
) -> Obj:
    """The runtime Deployment. With autoscaling on it has no `spec.replicas`: the HPA owns it."""
    deployment_spec: Obj = {
        "selector": {"matchLabels": selector_labels(name)},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": spec.rollout.max_surge,
                "maxUnavailable": spec.rollout.max_unavailable,
            },
        },
        "template": pod_template(name, spec, model_ref),
    }
    if spec.autoscaling is None:
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    metadata = child_metadata(
        name,
        namespace,
        uid,
        annotations={
            ANNOTATION_MODEL_REF: model_ref.digest(),
            LABEL_MODEL_VERSION: model_ref.version,
        },
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": deployment_spec,
    }


def build_service(name: str, namespace: str, uid: str, spec: SpeechModelSpec) -> Obj:
    metadata = child_metadata(name, namespace, uid)
    if spec.service.annotations:
        metadata["annotations"] = dict(spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(name),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": spec.service.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_hpa(name: str, namespace: str, uid: str, spec: SpeechModelSpec) -> Obj | None:
    scaling = spec.autoscaling
    if scaling is None:
        return None
    metrics: list[Obj] = []
    cpu_target = scaling.cpu_target()
    if cpu_target is not None:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": cpu_target},
                },
            }
        )
    if scaling.target_requests_in_flight is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": scaling.requests_in_flight_metric},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": str(scaling.target_requests_in_flight),
                    },
                },
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(name, namespace, uid),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds
                }
            },
        },
    }


def max_replicas(spec: SpeechModelSpec) -> int:
    return spec.autoscaling.max_replicas if spec.autoscaling else spec.replicas


def build_pdb(name: str, namespace: str, uid: str, spec: SpeechModelSpec) -> Obj | None:
    """At most one pod evicted at a time, when there can be more than one."""
    if max_replicas(spec) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(name, namespace, uid),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }


def build_service_monitor(name: str, namespace: str, uid: str, spec: SpeechModelSpec) -> Obj | None:
    monitor = spec.monitoring.service_monitor
    if not monitor.enabled:
        return None
    metadata = child_metadata(name, namespace, uid)
    metadata["labels"] = {**metadata["labels"], **(monitor.labels or {})}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "endpoints": [{"port": PORT_NAME, "path": "/metrics", "interval": monitor.interval}],
        },
    }


def build_children(
    name: str, namespace: str, uid: str, spec: SpeechModelSpec, model_ref: ModelRef
) -> list[Obj]:
    """Every child of a SpeechModel, in apply order."""
    children: list[Obj | None] = [
        build_service(name, namespace, uid, spec),
        build_deployment(name, namespace, uid, spec, model_ref),
        build_hpa(name, namespace, uid, spec),
        build_pdb(name, namespace, uid, spec),
        build_service_monitor(name, namespace, uid, spec),
        httproute.build_for(name, namespace, uid, spec),
    ]
    return [child for child in children if child is not None]
