"""The canary's edge for the handlers: which watched objects are the canary's, and a step's
verdict read from the canary pods' /metrics (a real HTTP server on loopback serving the
runtime's own metrics registry)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kubescribe_operator import canary_edge
from kubescribe_operator.cache import Snapshot
from kubescribe_operator.canary_children import LABEL_TRACK
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_runtime.metrics import Metrics
from prometheus_client import generate_latest

UID = "uid-1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = SpeechModelSpec.model_validate(
    {
        "model": {"uri": "s3://bucket/stt/2", "version": "2.0.0"},
        "rollout": {"strategy": "Canary", "canary": {"analysis": {"minRequests": 5}}},
    }
)


def obj(kind: str, name: str, owner: str = UID, track: str | None = None, **extra: Any) -> dict:
    labels = {"app.kubernetes.io/instance": "demo", **({LABEL_TRACK: track} if track else {})}
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "labels": labels}
    meta["ownerReferences"] = [{"uid": owner}]
    return {"kind": kind, "metadata": meta, **extra}


def pod(name: str, track: str | None, ip: str = "127.0.0.1") -> dict:
    return obj("Pod", name, track=track, status={"phase": "Running", "podIP": ip})


def test_split_keeps_the_stable_and_the_canary_apart() -> None:
    snap = Snapshot(
        "speech",
        "demo",
        None,
        {
            "Deployment": [obj("Deployment", "demo"), obj("Deployment", "demo-canary")],
            "ReplicaSet": [
                obj("ReplicaSet", "demo-1", owner="uid-demo"),
                obj("ReplicaSet", "demo-canary-1", owner="uid-demo-canary"),
            ],
            "Pod": [pod("demo-1-a", None), pod("demo-1-b", "stable"), pod("demo-c-a", "canary")],
        },
    )
    (stable, s_rs, s_pods), (cd, c_rs, c_pods) = canary_edge.split(snap, UID)
    assert stable is not None and stable["metadata"]["name"] == "demo"
    assert cd is not None and cd["metadata"]["name"] == "demo-canary"
    assert [r["metadata"]["name"] for r in s_rs] == ["demo-1"]
    assert [r["metadata"]["name"] for r in c_rs] == ["demo-canary-1"]
    assert [p["metadata"]["name"] for p in s_pods] == ["demo-1-a", "demo-1-b"]
    assert [p["metadata"]["name"] for p in c_pods] == ["demo-c-a"]
    no_canary = Snapshot("speech", "demo", None, {"Deployment": [obj("Deployment", "demo")]})
    assert canary_edge.split(no_canary, UID)[1] == (None, [], [])


def metrics_text(codes: list[str]) -> bytes:
    metrics = Metrics()
    for code in codes:  # as the runtime's routes record a transcription request
        metrics.requests.labels(code).inc()
        metrics.latency.labels(code).observe(0.2)
    return generate_latest(metrics.registry)


@pytest.fixture
def metrics_server() -> Iterator[tuple[int, list[bytes]]]:
    body: list[bytes] = [b""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], body
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("codes", "ok", "fragment"),
    [
        (["200"] * 10, True, "within thresholds: 10 requests"),
        (["200"] * 6 + ["500"] * 4, False, "error ratio 0.4"),
    ],
)
def test_analyse_reads_the_canary_pods_metrics(
    metrics_server: tuple[int, list[bytes]], codes: list[str], ok: bool, fragment: str
) -> None:
    port, body = metrics_server
    body[0] = metrics_text(codes)
    # The stable pod (no canary label) is not read: the same server would count it twice.
    pods = [pod("demo-c-a", "canary"), pod("demo-1-a", "stable")]
    verdict = canary_edge.analyse(SPEC, "speech", pods, NOW, port=port)
    assert verdict.ok is ok and fragment in verdict.reason


def test_metrics_that_cannot_be_read_are_no_verdict(
    metrics_server: tuple[int, list[bytes]],
) -> None:
    port, body = metrics_server
    body[0] = b"not the runtime's metrics"
    verdict = canary_edge.analyse(SPEC, "speech", [pod("demo-c-a", "canary")], NOW, port=port)
    assert (verdict.ok is None and "demo-c-a" in verdict.reason) or "metrics" in verdict.reason
    verdict = canary_edge.analyse(SPEC, "speech", [pod("demo-1-a", None)], NOW, port=port)
    assert verdict.ok is None and "no canary pod" in verdict.reason
