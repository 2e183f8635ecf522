"""Canary by traffic share on the real control plane (issue 19.3): the mechanics, with KWOK pods.

One routed SpeechModel (`demo`, autoscaled: the HPA holds its stable Deployment at minReplicas 4;
an HTTPRoute to a Gateway nobody runs: the route is rendered all the same) and one without a
route (`plain`) go through:
- 1.0 -> 2.0 by canary: `demo-canary` beside `demo`, the HTTPRoute's weights stable/canary 90/10
  then 50/50 (`plain`: one canary pod behind the one Service, mode ReplicaShare), the operator
  killed and restarted in the middle of a step (the canary resumes at that step, it does not
  start over), each step judged on the canary's metrics, promotion (the stable Deployment runs
  2.0, the route back to 100/0, `demo-canary` deleted), status and Events throughout;
- 2.0 -> 3.0 whose canary answers half its requests with 500: aborted at its first step, all
  traffic back to 2.0, the canary deleted, `failedVersion` 3.0 and Stalled `CanaryAborted`.

KWOK pods answer no HTTP, so the test plays the Prometheus the spec names
(`analysis.prometheusUrl`): its `/api/v1/query` answers the canary pods' request counters as
Prometheus would have scraped them. Real pods and real gateways: test_canary_share_live.py and
test_canary_abort_live.py.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import gateway_api  # cluster/gateway_api.py
import kubernetes
import pytest
from kube_cluster import Cluster, OperatorProcess, eventually
from kubescribe_operator.canary_children import LABEL_TRACK
from live import Models, condition, is_ready, manifest

pytestmark = pytest.mark.timeout(420)

Obj = dict[str, Any]
PAUSE_S = 6  # each step of `demo`; long enough to restart the operator inside the first


class FakePrometheus:
    """The Prometheus HTTP API's instant query, answering the runtime's request counter for
    every canary pod of the namespace: `requests` per pod, `errors` of them 500s."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.errors = 0
        self.queries = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parse_qs(self.rfile.read(length).decode())  # (the query names the pods)
                body = json.dumps(outer.answer()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self) -> Obj:
        self.queries += 1
        now = time.time()
        result = []
        for pod in self.models.pods():
            labels = pod["metadata"].get("labels") or {}
            if labels.get(LABEL_TRACK) != "canary":
                continue
            base = {"__name__": "kubescribe_requests_total", "namespace": self.models.ns}
            base["pod"] = pod["metadata"]["name"]
            for code, n in (("200", 20 - self.errors), ("500", self.errors)):
                metric = {**base, "code": code}
                result.append({"metric": metric, "value": [now, str(n)]})
        return {"status": "success", "data": {"resultType": "vector", "result": result}}

    def __enter__(self) -> FakePrometheus:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def models(cluster: Cluster, namespace: str) -> Iterator[Models]:
    gateway_api.install(lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout)
    yield Models(cluster, namespace)


def canary_spec(prometheus: str, pause: int, *weights: int) -> Obj:
    return {
        "strategy": "Canary",
        "canary": {
            "steps": [{"weight": w, "pauseSeconds": pause} for w in weights],
            "analysis": {"prometheusUrl": prometheus, "maxErrorRatio": 0.05, "minRequests": 5},
        },
    }


def route_weights(models: Models) -> dict[str, int]:
    api = kubernetes.client.CustomObjectsApi(models.client)
    route: Any = api.get_namespaced_custom_object(
        gateway_api.GROUP, "v1", models.ns, "httproutes", "demo"
    )
    weights = [
        {ref["name"]: ref.get("weight", 1) for ref in rule["backendRefs"]}
        for rule in route["spec"]["rules"]
    ]
    assert all(w == weights[0] for w in weights), weights  # every rule alike
    return weights[0]


def canary_state(models: Models, name: str = "demo") -> tuple[str, int] | None:
    cs = models.status(name).get("canary")
    return (cs["state"], cs["step"]) if cs else None


def test_canary_steps_restart_promotion_and_abort(
    cluster: Cluster, models: Models, live_operator: OperatorProcess
) -> None:
    t0 = time.monotonic()
    with FakePrometheus(models) as prometheus:
        demo = manifest(
            "demo",
            "1.0",
            replicas=None,  # the HPA's: it raises the stable Deployment to minReplicas, 4
            autoscaling={"minReplicas": 4, "maxReplicas": 6},
            routing={"parentRefs": [{"name": "speech"}]},
            rollout=canary_spec(prometheus.url, PAUSE_S, 10, 50),
        )
        plain = manifest("plain", "1.0", replicas=4, rollout=canary_spec(prometheus.url, 1, 10))
        models.create(demo)
        models.create(plain)
        models.wait_status(
            lambda s: is_ready("1.0")(s) and s.get("readyReplicas") == 4, "demo 1.0 ready on 4"
        )
        models.wait_status(is_ready("1.0"), "plain 1.0 ready", name="plain")
        assert models.child("Service", "demo-stable") and models.child("Service", "demo-canary")
        assert models.child("Service", "plain-canary") is None  # no route: no track Services
        assert route_weights(models) == {"demo-stable": 100, "demo-canary": 0}

        # 1.0 -> 2.0: the first step, 10 %.
        models.bump("demo", "2.0")
        models.bump("plain", "2.0")
        eventually(lambda: canary_state(models) == ("Running", 1), "demo's step 1 running")
        cd = models.child("Deployment", "demo-canary") or {}
        assert cd["spec"]["replicas"] == 1  # ceil(4 x 10 %)
        assert (models.deployment() or {})["metadata"]["annotations"][
            "kubescribe.io/model-version"
        ] == "1.0"  # the stable one untouched
        assert route_weights(models) == {"demo-stable": 90, "demo-canary": 10}
        status = models.status()
        assert status["phase"] == "Progressing" and status["targetVersion"] == "2.0"
        reconciling = condition(status, "Reconciling")
        assert (
            reconciling["reason"] == "CanaryRunning" and "step 1/2 (10%)" in reconciling["message"]
        )
        started = status["canary"]["started"]

        # The operator dies mid-step and comes back: the canary goes on from step 1.
        live_operator.kill()
        live_operator.start()
        seen: list[tuple[str, int] | None] = []

        def at_step_two() -> bool:
            seen.append(canary_state(models))
            return seen[-1] == ("Running", 2)

        eventually(at_step_two, lambda: f"demo's step 2 running (seen {seen[-5:]})", 90)
        assert ("Starting", 1) not in seen  # resumed, not started over
        assert models.status()["canary"]["started"] == started
        assert route_weights(models) == {"demo-stable": 50, "demo-canary": 50}
        assert (models.child("Deployment", "demo-canary") or {})["spec"]["replicas"] == 2
        # The HPA keeps the stable Deployment's replicas; the operator never owns them.
        stable = models.deployment() or {}
        assert stable["spec"]["replicas"] == 4
        owners = [
            e["manager"]
            for e in stable["metadata"]["managedFields"]
            if '"f:replicas"' in json.dumps(e.get("fieldsV1") or {})
        ]
        assert "kubescribe-operator" not in owners, owners

        # `plain`: its one step, without a route, is a share of the replicas.
        promoted = models.wait_status(is_ready("2.0"), "plain promoted", name="plain")
        assert promoted["lastKnownGood"]["version"] == "2.0" and "canary" not in promoted
        share = [e for e in models.event_log() if "replica share" in e]
        assert share, models.event_log()

        # Promotion: the stable Deployment runs 2.0, all traffic back to it, canary deleted.
        status = models.wait_status(is_ready("2.0"), "demo promoted", timeout=120)
        assert "canary" not in status and status["lastKnownGood"]["version"] == "2.0"
        eventually(lambda: models.child("Deployment", "demo-canary") is None, "demo-canary deleted")
        assert route_weights(models) == {"demo-stable": 100, "demo-canary": 0}
        assert [h["result"] for h in status["history"]] == ["Succeeded", "Succeeded"]
        reasons = models.event_reasons()
        for reason in ("CanaryStarted", "CanaryStep", "CanaryStepPassed", "CanaryPromoting"):
            assert reason in reasons, reasons
        assert "CanaryPromoted" in reasons
        promoted_at = time.monotonic()

        # 2.0 -> 3.0 whose canary fails half its requests: aborted at step 1.
        prometheus.errors = 10
        models.bump("demo", "3.0")
        status = models.wait_status(
            lambda s: condition(s, "Stalled").get("reason") == "CanaryAborted",
            "3.0's canary aborted",
            timeout=120,
        )
        assert status["failedVersion"] == "3.0" and status["currentVersion"] == "2.0"
        assert status["history"][-1]["result"] == "Aborted"
        assert "error ratio 0.5" in condition(status, "Stalled")["message"]
        assert "step 1/2" in condition(status, "Stalled")["message"]
        assert status["phase"] == "Degraded" and "canary" not in status
        eventually(
            lambda: models.child("Deployment", "demo-canary") is None, "3.0's canary deleted"
        )
        assert route_weights(models) == {"demo-stable": 100, "demo-canary": 0}
        assert models.event_reasons().count("CanaryAborted") == 1
        print(
            f"canary live: 1.0 -> 2.0 promoted after {promoted_at - t0:.1f} s (operator "
            f"restarted mid-step), 3.0 aborted {time.monotonic() - promoted_at:.1f} s later; "
            f"{prometheus.queries} analysis queries"
        )
