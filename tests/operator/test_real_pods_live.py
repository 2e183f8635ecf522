"""End to end on real pods (issue 18.4): the operator's SpeechModel runs the runtime image built
from this repository on the local cluster's real node (tests/test_real_node.py), in a namespace
that enforces the `restricted` Pod Security standard, and is reached as clients reach it: through
its Service's ClusterIP (routed from the host into the node's namespace, DNAT'ed by kube-proxy).
Each test prints its figures."""

from __future__ import annotations

import json
import time

import requests
from kube_cluster import Cluster, NodeHandle, OperatorProcess, eventually
from live import Models, is_ready, metric
from real_pods import (
    DEMO_URI,
    RUNTIME_CONTAINER,
    SAMPLE,
    SAMPLE_TEXT,
    Load,
    PodCounters,
    RealtimeCall,
    pcm24,
    real_model,
    realtime_turn,
    restrict,
    runtime_pods,
    service_url,
    transcribe,
    words,
)


def test_a_speechmodel_on_the_real_node_transcribes_through_its_service(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    t0 = time.monotonic()
    models.create(real_model())
    models.wait_status(is_ready("0.1.0"), "the demo model Ready on the real node", timeout=300)
    ready_s = time.monotonic() - t0
    pods = runtime_pods(models)
    assert [p["spec"]["nodeName"] for p in pods] == [real_node.name]
    pod = pods[0]
    url = service_url(models)

    answer = transcribe(url)
    assert answer.status_code == 200, answer.text
    text = answer.json()["text"]
    session = realtime_turn(url, pcm24(SAMPLE))
    spoken = session["transcript"]
    print(f"Ready in {ready_s:.1f} s; file: {text!r}; realtime: {spoken!r}")
    expected = set(words(SAMPLE_TEXT))
    for heard in (text, spoken):
        assert len(set(words(heard)) & expected) >= len(expected) // 2, heard

    # The runtime's /metrics, scraped from the pod's own address (as Prometheus would)
    scraped = requests.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10).text
    served = metric(scraped, "kubescribe_requests_total", code="200")
    print(f"kubescribe_requests_total{{code=200}} on the pod: {served}")
    assert served >= 1

    # kubectl logs: the runtime's lines, every one a JSON object, the model's load among them
    logs = cluster.kubectl(
        "logs", pod["metadata"]["name"], "-n", namespace, "-c", RUNTIME_CONTAINER
    ).stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    print(f"{len(lines)} JSON log lines, the last: {lines[-1] if lines else None}")
    assert lines and all({"time", "level", "message"} <= set(line) for line in lines), lines
    assert any(line["message"].startswith("serving ") for line in lines), lines


def test_a_rolling_model_update_under_load_fails_no_request(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    models.create(real_model(replicas=2))
    models.wait_status(is_ready("0.1.0"), "version 0.1.0 Ready on the real node", timeout=300)
    url = service_url(models)
    with PodCounters(models) as counters, Load(url) as load:
        eventually(lambda: len(load.ok) >= 2, "the first file requests served")
        call = RealtimeCall(url)
        eventually(lambda: call.completed() >= 1, "the first Realtime turn", timeout=120)
        t0 = time.monotonic()
        models.patch_spec("demo", {"model": {"uri": DEMO_URI, "version": "0.2.0"}})
        models.wait_status(is_ready("0.2.0"), "version 0.2.0 Ready", timeout=400)
        rollout_s = time.monotonic() - t0
        # Every old pod went, so did the session's: after its open turn, close 1001.
        eventually(call.closed.is_set, "the old pod's Realtime session closed", timeout=120)
        served_before_close = call.completed()
        fresh = realtime_turn(url, pcm24(SAMPLE))  # a new session, on a new pod, at once
        done = time.monotonic()
        eventually(lambda: load.ok[-1] > done, "a file request served after the rollout")
    per_version = counters.per_version()
    print(
        f"rollout {rollout_s:.1f} s; file requests ok {len(load.ok)}, failed {len(load.failed)}; "
        f"served per version {per_version}; longest gap {load.longest_gap():.2f} s; "
        f"realtime: {served_before_close} turns then close {call.close_code}, "
        f"last events {call.events[-4:]}; new session: {fresh['transcript']!r}"
    )
    assert load.failed == []
    assert call.close_code == 1001
    # The open turn was committed and answered before the close: the last transcription event
    # before it is a completion, not a turn left open.
    turn_events = [e for e in call.events if e.startswith(("input_audio_buffer.speech",
                   "conversation.item.input_audio_transcription.completed"))]  # fmt: skip
    assert turn_events[-1] == "conversation.item.input_audio_transcription.completed", turn_events
    assert fresh["transcript"]
    assert per_version.get("0.1.0", 0) > 0 and per_version.get("0.2.0", 0) > 0, per_version
