"""The canary's share of the traffic at weight 10, measured through real gateways to real pods
(issue 19.3): within ±3 points over 1000 requests.

`demo` (the runtime image's bundled demo model on the local cluster's real node, one stable pod)
is routed through Traefik and Envoy (cluster/gateways.py) with `rollout.strategy: Canary`; its
new version (the same artifact under another version label) holds at its first step, weight 10
(a long pause), with one canary pod. Through each gateway 1000 requests go out, each answered
415 at once by whichever pod serves it (a transcription request without a multipart body: the
runtime counts it, by code, in its own /metrics). Which pod served is read where the runtime
counts it: every pod's /metrics, scraped from its IP before and after. The test prints the
share per gateway. While the step holds, resyncs write nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests
from gateways import ENVOY_CONTROLLER, NAMESPACE, TRAEFIK_CONTROLLER, Gateways
from kube_cluster import Cluster, NodeHandle, OperatorProcess, eventually
from kubescribe_operator.canary_children import LABEL_TRACK
from live import Models, is_ready, metric, operator_writes, wait_resyncs
from real_pods import DEMO_URI, real_model, restrict, runtime_pods

pytestmark = pytest.mark.timeout(900)

REQUESTS = 1000
WEIGHT = 10
TOLERANCE = 3.0  # percentage points
CODE = "415"  # what the runtime answers a transcription request that is not multipart
CONTROLLERS = {"traefik": TRAEFIK_CONTROLLER, "envoy": ENVOY_CONTROLLER}


def counts(models: Models) -> dict[str, tuple[str, float]]:
    """Per running pod: its track and the 415s it counted (its own /metrics)."""
    out = {}
    for pod in runtime_pods(models):
        text = requests.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10).text
        track = (pod["metadata"].get("labels") or {}).get(LABEL_TRACK, "?")
        out[pod["metadata"]["name"]] = (track, metric(text, "kubescribe_requests_total", code=CODE))
    return out


def send(session: requests.Session, url: str, n: int) -> list[int]:
    """`n` transcription requests without a body through the gateway: their status codes."""
    return [
        session.post(
            url + "/v1/audio/transcriptions",
            headers={"x-kubescribe-model": "demo"},
            data={"model": "demo"},
            timeout=30,
        ).status_code
        for _ in range(n)
    ]


def canary_count(seen: dict[str, tuple[str, float]]) -> float:
    return sum(n for track, n in seen.values() if track == "canary")


def route_applied(models: Models, weight: int) -> bool:
    """The HTTPRoute carries the weight and every gateway reports its current generation."""
    api = kubernetes.client.CustomObjectsApi(models.client)
    route: Any = api.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", models.ns, "httproutes", "demo"
    )
    refs = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
    if refs.get("demo-canary") != weight:
        return False
    generation = route["metadata"]["generation"]
    seen = set()
    for parent in (route.get("status") or {}).get("parents") or []:
        conditions = {c["type"]: c for c in parent.get("conditions") or []}
        accepted = conditions.get("Accepted") or {}
        if accepted.get("status") == "True" and accepted.get("observedGeneration") == generation:
            seen.add(parent.get("controllerName"))
    return set(CONTROLLERS.values()) <= seen


def test_at_weight_10_the_canary_serves_10_percent_through_each_gateway(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    gateways = Gateways(
        lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout,
        cluster.server, cluster.local.pki.ca_cert, tmp_path / "gateways",
    )  # fmt: skip
    gateways.start()
    try:
        body = real_model("demo", replicas=1)
        body["spec"]["routing"] = {
            "parentRefs": [{"name": g, "namespace": NAMESPACE} for g in CONTROLLERS]
        }
        body["spec"]["rollout"] = {
            "strategy": "Canary",
            "canary": {"steps": [{"weight": WEIGHT, "pauseSeconds": 3600}, {"weight": 100}]},
        }
        models.create(body)
        models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
        models.patch_spec("demo", {"model": {"uri": DEMO_URI, "version": "0.1.1"}})
        eventually(
            lambda: (models.status().get("canary") or {}).get("state") == "Running",
            lambda: f"the canary's first step running: {models.status().get('canary')}",
            timeout=300,
        )
        eventually(lambda: route_applied(models, WEIGHT), "both gateways on the 90/10 route")
        tracks = sorted(track for track, _ in counts(models).values())
        assert tracks == ["canary", "stable"], tracks  # one pod each

        shares = {}
        for gateway, url in (("traefik", gateways.traefik_url), ("envoy", gateways.envoy_url)):
            with requests.Session() as session:
                # The gateway's data plane on the new weights (a route's status can come before
                # its configuration is live): the canary pod gets some of 50 requests.
                def canary_served(session: requests.Session = session, url: str = url) -> bool:
                    seen = canary_count(counts(models))
                    send(session, url, 50)
                    return canary_count(counts(models)) > seen

                eventually(canary_served, f"{gateway} sending to the canary", timeout=60)
                before = counts(models)
                codes = send(session, url, REQUESTS)
            after = counts(models)
            assert codes.count(int(CODE)) == REQUESTS, sorted(set(codes))
            served = {
                pod: after[pod][1] - before.get(pod, (track, 0.0))[1]
                for pod, (track, _) in after.items()
            }
            canary = sum(n for pod, n in served.items() if after[pod][0] == "canary")
            total = sum(served.values())
            assert total == REQUESTS, served  # every request counted by exactly one pod
            shares[gateway] = 100 * canary / total
            print(
                f"canary share through {gateway} at weight {WEIGHT}: {canary:.0f} of "
                f"{total:.0f} requests = {shares[gateway]:.1f} %"
            )
        for gateway, share in shares.items():
            assert abs(share - WEIGHT) <= TOLERANCE, (gateway, share)
        # The step holds (an hour's pause): resyncs with nothing due write nothing.
        since = cluster.audit_offset()
        wait_resyncs(live_operator, 3)
        assert operator_writes(cluster, since, namespace) == []
        assert (models.status().get("canary") or {}).get("step") == 1
    finally:
        gateways.stop()
