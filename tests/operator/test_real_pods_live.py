"""End to end on real pods (issue 18.4): the operator's SpeechModel runs the runtime image built
from this repository on the local cluster's real node (tests/test_real_node.py), in a namespace
that enforces the `restricted` Pod Security standard, and is reached as clients reach it: through
its Service's ClusterIP (routed from the host into the node's namespace, DNAT'ed by kube-proxy).
Each test prints its figures."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests
import soundfile
import soxr
from kube_cluster import (
    REAL_NODE_SCHEDULING,
    ROOT,
    Cluster,
    NodeHandle,
    OperatorProcess,
    eventually,
)
from live import VERSION_LABEL, Models, is_ready, manifest, metric
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
SAMPLE_TEXT = (ROOT / "examples" / "audio" / "sample.txt").read_text(encoding="utf-8").strip()
DEMO_URI = "/opt/kubescribe/models/demo"  # the demo model inside the runtime image
RUNTIME_CONTAINER = "runtime"


def real_model(name: str = "demo", version: str = "0.1.0", replicas: int = 1) -> dict[str, Any]:
    """A SpeechModel of the bundled demo model, scheduled onto the real node only."""
    return manifest(
        name,
        version,
        model={"uri": DEMO_URI, "version": version},
        runtime={
            "device": "cpu",
            "threads": 1,
            # small requests: a 2-core node holds the old and the new pods of a rollout
            "resources": {"requests": {"cpu": "100m"}},
        },
        replicas=replicas,
        scheduling=REAL_NODE_SCHEDULING,
    )


def restrict(cluster: Cluster, namespace: str) -> None:
    """The namespace enforces the `restricted` Pod Security standard (and warns on it)."""
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted", "--overwrite",
    )  # fmt: skip


def service_url(models: Models, name: str = "demo") -> str:
    svc = models.child("Service", name)
    assert svc is not None
    port = svc["spec"]["ports"][0]["port"]
    return f"http://{svc['spec']['clusterIP']}:{port}"


def transcribe(url: str, timeout: float = 120) -> requests.Response:
    return requests.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("sample.wav", SAMPLE.read_bytes(), "audio/wav")},
        data={"model": "demo"},
        timeout=timeout,
    )


def words(text: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in text.split()]


def pcm24(path: Any) -> bytes:
    wave, rate = soundfile.read(path, dtype="float32")
    wave = soxr.resample(wave, rate, 24000)
    return bytes((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes())


def realtime_turn(url: str, audio: bytes, timeout: float = 120) -> dict[str, Any]:
    """One Realtime session: the audio in 100 ms appends, a commit, the completed event."""
    ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    config = {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "demo", "language": "en"},
                            "turn_detection": None}},
    }  # fmt: skip
    with connect(ws_url, max_size=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "session.update", "session": config}))
        step = 4800
        for offset in range(0, len(audio), step):
            chunk = base64.b64encode(audio[offset : offset + step]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            assert event["type"] != "error", event
            if event["type"] == "conversation.item.input_audio_transcription.completed":
                return dict(event)
    raise AssertionError(f"no completed transcription in {timeout} s")


def runtime_pods(models: Models) -> list[dict[str, Any]]:
    return [
        p for p in models.pods()
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]  # fmt: skip


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


@dataclass
class Load:
    """File requests sent continuously through the Service by ``clients`` threads."""

    url: str
    clients: int = 2
    ok: list[float] = field(default_factory=list)  # completion times of the successes
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = transcribe(self.url)
                if answer.status_code == 200 and answer.json().get("text"):
                    self.ok.append(time.monotonic())
                else:
                    self.failed.append(f"{answer.status_code} {answer.text[:200]}")
            except requests.RequestException as exc:
                self.failed.append(repr(exc))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(150)

    def longest_gap(self) -> float:
        times = sorted(self.ok)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


class PodCounters:
    """Each runtime pod's kubescribe_requests_total{code="200"}, scraped from the pod every
    half second while it runs: requests served per model version (the pods' version label)."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.last: dict[str, tuple[str, float]] = {}  # pod -> (version, count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodCounters:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for pod in runtime_pods(self.models):
                ip = pod["status"].get("podIP")
                version = pod["metadata"]["labels"].get(VERSION_LABEL, "?")
                try:
                    text = requests.get(f"http://{ip}:8080/metrics", timeout=2).text
                except requests.RequestException:
                    continue  # going away: its last count stands
                count = metric(text, "kubescribe_requests_total", code="200")
                self.last[pod["metadata"]["name"]] = (version, count)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def per_version(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for version, count in self.last.values():
            out[version] += int(count)
        return dict(out)


class RealtimeCall:
    """A Realtime session streaming speech at real-time pace (the sample, then a second of
    silence, over and over; server VAD), recording its events until the server closes it."""

    def __init__(self, url: str) -> None:
        wave = pcm24(SAMPLE)
        self.audio = wave + bytes(48000)  # 1 s of silence: the turn ends
        self.ws = connect(
            url.replace("http://", "ws://") + "/v1/realtime?intent=transcription",
            max_size=None, open_timeout=30,
        )  # fmt: skip
        config = {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                "transcription": {"model": "demo", "language": "en"},
                                "turn_detection": {"type": "server_vad",
                                                   "silence_duration_ms": 500}}},
        }  # fmt: skip
        self.ws.send(json.dumps({"type": "session.update", "session": config}))
        self.events: list[str] = []
        self.close_code: int | None = None
        self.closed = threading.Event()
        threading.Thread(target=self._send, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _send(self) -> None:
        started, i = time.monotonic(), 0
        with contextlib.suppress(ConnectionClosed):
            while not self.closed.is_set():
                offset = (i * 4800) % len(self.audio)
                chunk = self.audio[offset : offset + 4800]
                self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                         "audio": base64.b64encode(chunk).decode()}))  # fmt: skip
                i += 1
                time.sleep(max(0.0, started + i * 0.1 - time.monotonic()))

    def _receive(self) -> None:
        try:
            while True:
                self.events.append(json.loads(self.ws.recv())["type"])
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
        finally:
            self.closed.set()

    def completed(self) -> int:
        return self.events.count("conversation.item.input_audio_transcription.completed")


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
