"""Autoscaling on the real control plane: the real HPA controller owns the replicas (issue 10.4).

The controller-manager of the test cluster runs the horizontal-pod-autoscaler controller (5 s
sync) and the cluster has no metrics API, so every HPA here reports `ScalingActive=False`
(`FailedGetResourceMetric`) once the replica count is within its bounds; below `minReplicas`
or above `maxReplicas` it still scales, without metrics. The operator's field manager must never
own the Deployment's `spec.replicas` (read from managedFields), none of its resyncs may undo the
HPA's choice (read from the audit log), and an HPA that cannot scale shows in the SpeechModel's
status as a warning (`AutoscalingActive=False`, a Warning Event) while the model stays Ready.
"""

from __future__ import annotations

from typing import Any

import pytest
from kube_cluster import Cluster, OperatorProcess, eventually
from live import Models, condition, is_ready, manifest, operator_writes, wait_resyncs

Obj = dict[str, Any]
pytestmark = pytest.mark.timeout(300)  # only bounds a hang

MANAGER = "kubescribe-operator"
HPA = "HorizontalPodAutoscaler"


def replicas_owners(deployment: Obj) -> set[tuple[str, str]]:
    """(manager, subresource) of every managedFields entry that owns `spec.replicas`."""
    return {
        (e["manager"], e.get("subresource", ""))
        for e in deployment["metadata"].get("managedFields") or []
        if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})
    }


def deployment_replicas(models: Models) -> int | None:
    deployment = models.deployment()
    return None if deployment is None else int(deployment["spec"].get("replicas", 1))


def hpa_condition(models: Models, kind: str) -> Obj:
    hpa = models.child(HPA) or {}
    return next(
        (c for c in (hpa.get("status") or {}).get("conditions") or [] if c["type"] == kind), {}
    )


def test_the_hpa_enforces_its_bounds_and_the_operator_never_takes_replicas_back(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(replicas=None, autoscaling={"minReplicas": 3, "maxReplicas": 4}))
    # The operator creates the Deployment without a count; the HPA raises it to minReplicas.
    eventually(lambda: deployment_replicas(models) == 3, "the HPA to scale to minReplicas 3")
    models.wait_status(
        lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 3, "ready on 3 replicas"
    )
    deployment = models.deployment()
    assert deployment is not None
    # Not the operator's: the HPA sets it through /scale (which the server records under no
    # manager, so nobody's apply can take it back by accident).
    assert (MANAGER, "") not in replicas_owners(deployment), replicas_owners(deployment)
    assert any(e["manager"] == MANAGER for e in deployment["metadata"]["managedFields"])

    # Someone scales past maxReplicas: the HPA brings it back to 4, the operator stays out.
    since = cluster.audit_offset()
    models.apps.patch_namespaced_deployment_scale("demo", namespace, {"spec": {"replicas": 6}})
    eventually(lambda: deployment_replicas(models) == 4, "the HPA to enforce maxReplicas 4")
    models.wait_status(lambda s: s.get("readyReplicas") == 4, "ready on 4 replicas")
    wait_resyncs(live_operator, 3)
    assert deployment_replicas(models) == 4
    writes = operator_writes(cluster, since, namespace)
    assert not [w for w in writes if w.startswith("patch deployments")], writes
    deployment = models.deployment()
    assert deployment is not None
    assert (MANAGER, "") not in replicas_owners(deployment)

    # A rollout keeps the HPA's count too: the new ReplicaSet ends at 4.
    models.bump("demo", "2.0")
    models.wait_status(
        lambda s: is_ready("2.0")(s) and s.get("readyReplicas") == 4, "2.0 ready on 4"
    )
    assert deployment_replicas(models) == 4


def test_an_hpa_that_cannot_scale_is_a_warning_on_a_ready_model(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(replicas=None, autoscaling={"minReplicas": 1, "maxReplicas": 3}))
    # The real HPA says it cannot compute a count: no metrics API in this cluster.
    hpa_says = eventually(
        lambda: (c := hpa_condition(models, "ScalingActive")).get("status") == "False" and c,
        "the HPA's ScalingActive=False",
    )
    status = models.wait_status(
        lambda s: condition(s, "AutoscalingActive").get("status") == "False",
        "the warning in the SpeechModel's status",
    )
    warning = condition(status, "AutoscalingActive")
    assert warning["reason"] == hpa_says["reason"]
    assert hpa_says["message"] in warning["message"]
    # A warning, not a failure: the model serves and nothing is stuck.
    status = models.wait_status(is_ready("1.0"), "1.0 ready")
    assert condition(status, "AutoscalingActive")["status"] == "False"
    assert condition(status, "Stalled")["status"] == "False"
    assert condition(status, "Reconciling")["status"] == "False"
    models.wait_events(lambda r: "AutoscalingInactive" in r, "the Warning Event")
    # Announced once, however many resyncs see it.
    wait_resyncs(live_operator, 3)
    assert models.event_reasons().count("AutoscalingInactive") == 1

    # Autoscaling off: no HPA, no condition about it.
    models.patch_spec("demo", {"autoscaling": None, "replicas": 2})
    status = models.wait_status(
        lambda s: (
            is_ready("1.0")(s) and s.get("readyReplicas") == 2 and s["observedGeneration"] == 2
        ),
        "ready on 2 fixed replicas",
    )
    eventually(lambda: models.child(HPA) is None, "the HPA to go")
    status = models.wait_status(
        lambda s: not condition(s, "AutoscalingActive"), "the AutoscalingActive condition to go"
    )
    assert condition(status, "Ready")["status"] == "True"
