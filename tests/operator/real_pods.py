"""Helpers of the real-pod tests (test_real_pods_live.py, test_real_pods_disruption_live.py):
a SpeechModel of the runtime image's bundled demo model scheduled onto the real node, requests
through its Service's ClusterIP (routed from the host into the node's namespace), continuous
load, per-pod counters scraped from each pod, a Realtime call streaming at real-time pace, and
an https server of artifacts on the host's end of the node's veth (what `make demo` serves)."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import itertools
import json
import shutil
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests
import soundfile
import soxr
from kube_cluster import REAL_NODE_SCHEDULING, ROOT, Cluster, NodeHandle
from kubescribe_operator.pod import default_resources
from kubescribe_operator.spec import parse_spec
from kubescribe_runtime.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file
from live import VERSION_LABEL, Models, manifest, metric
from pki import sign
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

SAMPLE = ROOT / "examples" / "audio" / "sample.wav"
SAMPLE_TEXT = (ROOT / "examples" / "audio" / "sample.txt").read_text(encoding="utf-8").strip()
DEMO_URI = "/opt/kubescribe/models/demo"  # the demo model inside the runtime image
DEMO_ARTIFACT = ROOT / "examples" / "models" / "demo"  # the same artifact, in this checkout
# In a pod, its ServiceAccount volume's ca.crt is the cluster's CA, which signs ArtifactServer's
# certificate: the fetch container's https client trusts it through this variable.
CLUSTER_CA_BUNDLE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
RUNTIME_CONTAINER = "runtime"


def real_model(name: str = "demo", version: str = "0.1.0", replicas: int = 1) -> dict[str, Any]:
    """A SpeechModel of the bundled demo model, scheduled onto the real node only. Memory is the
    operator's own formula (what it sets without ``runtime.resources``); the CPU request is
    small, so the 2-core node holds the old and the new pods of a rollout."""
    body = manifest(
        name,
        version,
        model={"uri": DEMO_URI, "version": version},
        runtime={"device": "cpu", "threads": 1},
        replicas=replicas,
        scheduling=REAL_NODE_SCHEDULING,
    )
    formula = default_resources(parse_spec(body["spec"]))
    formula["requests"]["cpu"] = "100m"
    body["spec"]["runtime"]["resources"] = formula
    return body


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


def unloadable_artifact(directory: Path) -> str:
    """A copy of the demo artifact in ``directory`` whose model.onnx is not an ONNX model, its
    manifest's digest of model.onnx updated to match: it fetches and verifies, and fails to load.
    Returns the sha256 of its kubescribe.yaml (``model.sha256``)."""
    demo = ArtifactManifest.load(DEMO_ARTIFACT)
    directory.mkdir(parents=True, exist_ok=True)
    for name in demo.files:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_ARTIFACT / name, directory / name)
    model = directory / "model.onnx"
    model.write_bytes(b"not an ONNX model\n" * 4096)
    text = (DEMO_ARTIFACT / MANIFEST_NAME).read_text(encoding="utf-8")
    line = f"model.onnx: {demo.files['model.onnx']}"
    assert text.count(line) == 1, line
    text = text.replace(line, f"model.onnx: {sha256_file(model)}")
    (directory / MANIFEST_NAME).write_text(text, encoding="utf-8")
    assert ArtifactManifest.load(directory).files["model.onnx"] == sha256_file(model)
    return sha256_file(directory / MANIFEST_NAME)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class ArtifactServer:
    """``root`` served over https, in a thread of the test process, on a free port of the host's
    end of the real node's veth (which pods reach), with a certificate from the cluster's CA
    (as `make demo` serves examples/models). A pod's fetch trusts it with ``REQUESTS_CA_BUNDLE``
    set to ``CLUSTER_CA_BUNDLE`` and its ServiceAccount token volume mounted."""

    def __init__(self, root: Path, node: NodeHandle) -> None:
        self.root, self.host = root, node.node.slot.host_ip
        self.ca_cert = node.node.pki.ca_cert
        self.cert, self.key = sign(
            node.node.pki, "test-artifacts", "/CN=kubescribe-test-artifacts",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{self.host}\n",
        )  # fmt: skip
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer((self.host, 0), handler)
        self.server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(self.cert, self.key)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "") -> str:
        return f"https://{self.host}:{self.port}/{path}".rstrip("/")

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
