"""An idle resync mutates nothing, from the real API server's point of view (issue 10.4).

Settled SpeechModels (fixed replicas, and autoscaled with an HPA that reports it cannot scale)
are left alone while the operator resyncs them every 2 s. Every object in their namespace, of
every namespaced kind the server serves, is listed before and after: no resourceVersion moves
and nothing appears or goes (Events about other objects aside: the HPA controller re-counts its
own warning every sync), and the audit log shows no write by the operator's user. The
requests the operator made per SpeechModel per resync are printed (the budget and the no-GET
rule are asserted in test_hardening_live.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kube_cluster import OPERATOR_USER, Cluster, OperatorProcess, eventually
from live import Models, condition, is_ready, manifest, operator_requests, reconciles

pytestmark = pytest.mark.timeout(300)  # only bounds a hang

RESYNCS = 3
MODELS = {
    "fixed": manifest("fixed"),
    "autoscaled": manifest(
        "autoscaled", replicas=None, autoscaling={"minReplicas": 2, "maxReplicas": 3}
    ),
}


def namespaced_kinds(cluster: Cluster) -> list[str]:
    out = cluster.kubectl("api-resources", "--namespaced", "--verbs=list", "-o", "name")
    # events.k8s.io serves the core Events again under another name: listed once.
    return sorted(set(out.stdout.split()) - {"events.events.k8s.io"})


def versions(cluster: Cluster, namespace: str, kinds: list[str]) -> dict[str, str]:
    """resourceVersion of every object in the namespace, by "kind/name"."""
    out = cluster.kubectl("get", ",".join(kinds), "-n", namespace, "-o", "json")
    return {
        f"{item['kind']}/{item['metadata']['name']}": item["metadata"]["resourceVersion"]
        for item in json.loads(out.stdout)["items"]
        if not _someone_elses_event(item)
    }


def _someone_elses_event(item: dict[str, Any]) -> bool:
    """An Event another controller keeps re-counting: the HPA controller's
    FailedGetResourceMetric every sync, with no metrics API (the SpeechModel's are kept)."""
    about = item.get("involvedObject") or item.get("regarding") or {}
    return item["kind"] == "Event" and about.get("kind") != "SpeechModel"


def test_an_idle_resync_changes_no_object_in_the_namespace(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    for body in MODELS.values():
        models.create(body)
    models.wait_status(
        lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 2, "fixed ready", name="fixed"
    )
    try:
        models.wait_status(
            lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 2,
            "autoscaled ready on minReplicas",
            name="autoscaled",
        )
        eventually(
            lambda: _hpa_conditions(models, "autoscaled"), "the HPA's conditions", timeout=180
        )
        models.wait_status(
            lambda s: condition(s, "AutoscalingActive").get("status") == "False",
            "the HPA's verdict in the status",
            name="autoscaled",
        )
    except AssertionError:
        print("status:", models.status("autoscaled"))
        print("HPA:", models.child("HorizontalPodAutoscaler", "autoscaled"))
        raise
    # Settled: a few resyncs after everything is in place, before looking.
    start = reconciles(live_operator)
    _wait_resyncs(live_operator, start, len(MODELS) * 2)
    kinds = namespaced_kinds(cluster)
    before = versions(cluster, namespace, kinds)
    since = cluster.audit_offset()
    start = reconciles(live_operator)

    _wait_resyncs(live_operator, start, len(MODELS) * RESYNCS)

    requests = [e for e in operator_requests(cluster, since, namespace) if e.verb != "watch"]
    resyncs = (reconciles(live_operator) - start) / len(MODELS)
    after = versions(cluster, namespace, kinds)
    per_model = len(requests) / len(MODELS) / resyncs
    print(
        f"idle: {len(requests)} request(s) in the namespace over {resyncs:g} resync(s) of "
        f"{len(MODELS)} SpeechModels: {per_model:.2f} per SpeechModel per resync; "
        f"{len(before)} objects watched for changes"
    )
    expected = {"SpeechModel/fixed", "Deployment/autoscaled", "HorizontalPodAutoscaler/autoscaled"}
    assert expected <= set(before), sorted(before)
    changed = {
        key: (before.get(key), after.get(key))
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    }
    assert changed == {}
    # And the operator wrote nothing anywhere (kopf's peering heartbeat aside).
    writes = [
        f"{e.verb} {e.resource}/{e.name}"
        for e in cluster.audit(since, user=OPERATOR_USER)
        if e.is_write and not e.resource.endswith("kopfpeerings")
    ]
    assert writes == []


def _hpa_conditions(models: Models, name: str) -> list[dict[str, Any]]:
    hpa = models.child("HorizontalPodAutoscaler", name) or {}
    return list((hpa.get("status") or {}).get("conditions") or [])


def _wait_resyncs(operator: OperatorProcess, start: float, count: int) -> None:
    eventually(lambda: reconciles(operator) >= start + count, f"{count} resyncs")
