"""One endpoint per gateway in front of real runtime pods (issue 19.2).

Two SpeechModels on the local cluster's real node, in one namespace for the whole module: the
English demo model (`demo`) and the Spanish one (`demo-es`, names [support-es], the default for
`es`), both routed through two real Gateway API implementations that run on the host
(cluster/gateways.py): Traefik with its Kubernetes Gateway provider, and Envoy configured from
the same HTTPRoutes with the body-to-header Lua filter of examples/gateways/envoy/. Clients are
the official openai client with ONE base_url per gateway.

Which model answered is read where the runtime counts it: each SpeechModel's pods' own
/metrics (requests by code, refusals by reason, Realtime turns), scraped from the pods' IPs
before and after the call; exactly one model's count moves. Each test prints its figures.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests
import soundfile
import soxr
from gateways import ACCOUNT, ENVOY_CONTROLLER, NAMESPACE, TRAEFIK_CONTROLLER, Gateways
from kube_cluster import (
    OPERATOR_USER,
    Cluster,
    NodeHandle,
    OperatorProcess,
    eventually,
    service_account_user,
)
from kubescribe_operator.naming import LABEL_INSTANCE
from live import Models, condition, is_ready, metric
from real_pods import SAMPLE, pcm24, real_model, restrict, runtime_pods

GATEWAYS = ("traefik", "envoy")
SPANISH, ALIAS = "demo-es", "support-es"
SPANISH_URI = "/opt/kubescribe/models/demo-es"  # bundled in the runtime image, like the demo
MAX_UPLOAD = 25 * 1024 * 1024  # the runtime's default --max-upload-mb (whole request body)
ROUTING = {"parentRefs": [{"name": "traefik", "namespace": NAMESPACE},
                          {"name": "envoy", "namespace": NAMESPACE}]}  # fmt: skip


@dataclass
class Line:
    """The two routed SpeechModels and the gateways in front of them."""

    cluster: Cluster
    models: Models
    gateways: Gateways
    audit_since: int

    def url(self, gateway: str) -> str:
        return self.gateways.traefik_url if gateway == "traefik" else self.gateways.envoy_url

    def client(self, gateway: str, path: str = "/v1", **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url(gateway) + path, api_key="unused", max_retries=0,
            default_headers=headers or None, timeout=120,
        )  # fmt: skip

    def counts(self, name: str, **labels: str) -> dict[str, float]:
        """Metric ``name`` summed over each SpeechModel's running pods."""
        out: dict[str, float] = {}
        for pod in runtime_pods(self.models):
            model = pod["metadata"]["labels"][LABEL_INSTANCE]
            text = requests.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10).text
            out[model] = out.get(model, 0.0) + metric(text, name, **labels)
        return out

    def answered_by(
        self, call: Callable[[], object], name: str = "kubescribe_requests_total", **labels: str
    ) -> str:
        """The one SpeechModel whose pods counted ``call`` (the default: a 200 answer)."""
        if name == "kubescribe_requests_total" and not labels:
            labels = {"code": "200"}
        before = self.counts(name, **labels)
        call()

        def moved() -> list[str]:
            after = self.counts(name, **labels)
            return [m for m in after if after[m] > before.get(m, 0.0)]

        models = eventually(moved, f"a pod counting {name}{labels}", timeout=30)
        assert len(models) == 1, models
        return models[0]


def speech_models() -> list[dict[str, Any]]:
    english = real_model("demo")
    spanish = real_model(SPANISH)
    spanish["spec"]["model"]["uri"] = SPANISH_URI
    english["spec"]["routing"] = dict(ROUTING)
    spanish["spec"]["routing"] = {**ROUTING, "names": [ALIAS], "defaultForLanguages": ["es"]}
    return [english, spanish]


def accepted_by_both(route: dict[str, Any] | None) -> bool:
    parents = ((route or {}).get("status") or {}).get("parents") or []
    ok = {
        p["controllerName"]
        for p in parents
        if all(
            any(c["type"] == kind and c["status"] == "True" for c in p.get("conditions") or [])
            for kind in ("Accepted", "ResolvedRefs")
        )
    }
    return {TRAEFIK_CONTROLLER, ENVOY_CONTROLLER} <= ok


@pytest.fixture(scope="module")
def line(
    cluster: Cluster,
    real_node: NodeHandle,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Line]:
    t0 = time.monotonic()
    since = cluster.audit_offset()
    namespace = f"gateways-{uuid.uuid4().hex[:5]}"
    cluster.create_namespace(namespace)
    restrict(cluster, namespace)
    work = tmp_path_factory.mktemp("gateways")
    gateways = Gateways(
        lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout,
        cluster.server, cluster.local.pki.ca_cert, work / "gateways",
    )  # fmt: skip
    operator = OperatorProcess(operator_kubeconfig, work)
    models = Models(cluster, namespace)
    try:
        gateways.start()
        operator.start()
        routes = kubernetes_routes(models)
        for body in speech_models():
            models.create(body)
        for name in ("demo", SPANISH):  # rendered by the operator from spec.routing
            eventually(lambda n=name: routes(n), f"the operator's HTTPRoute {name}")
        for name in ("demo", SPANISH):
            models.wait_status(is_ready("0.1.0"), f"{name} Ready", name=name, timeout=300)
        for name in ("demo", SPANISH):
            eventually(lambda n=name: accepted_by_both(routes(n)),
                       f"HTTPRoute {name} accepted by both gateways", timeout=60)  # fmt: skip
        this = Line(cluster, models, gateways, since)
        for gateway in GATEWAYS:  # each has the routes and the pods' endpoints
            eventually(lambda g=gateway: _serves(this, g), f"{gateway} serving", timeout=60)
        print(f"two models Ready behind both gateways in {time.monotonic() - t0:.1f} s")
        yield this
    finally:
        cluster.kubectl("delete", "speechmodels", "--all", "-n", namespace, "--timeout=60s",
                        check=False)  # fmt: skip
        operator.kill()
        gateways.stop()
        print(operator.logs()[-5000:], gateways.logs("envoy-sync")[-3000:])
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def kubernetes_routes(models: Models) -> Callable[[str], dict[str, Any] | None]:
    import kubernetes

    api = kubernetes.client.CustomObjectsApi(models.client)

    def read(name: str) -> dict[str, Any] | None:
        try:
            return dict(api.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", models.ns, "httproutes", name))  # fmt: skip
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return read


def _serves(line: Line, gateway: str) -> bool:
    try:
        both = [requests.get(line.url(gateway) + f"/models/{n}/healthz", timeout=5).status_code
                for n in ("demo", ALIAS)]  # fmt: skip
    except requests.RequestException:
        return False
    return both == [200, 200]


def wav(size: int, rate: int = 48000) -> bytes:
    """The sample's speech, then silence, as a 16-bit WAV file of ``size`` bytes at ``rate``
    (non-speech is not decoded, so a large upload stays cheap to transcribe)."""
    speech, source_rate = soundfile.read(SAMPLE, dtype="float32")
    speech = soxr.resample(speech, source_rate, rate)
    frames = (size - 44) // 2
    wave = np.zeros(frames, dtype="float32")
    wave[: len(speech)] = speech[:frames]
    out = io.BytesIO()
    soundfile.write(out, wave, rate, subtype="PCM_16", format="WAV")
    data = out.getvalue()
    assert len(data) == size - (size - 44) % 2, len(data)
    return data


SAMPLE_WAV = SAMPLE.read_bytes()


# ----------------------------------------------------------------------------- the routes
def test_both_gateways_accept_the_routes_and_the_models_say_routed(line: Line) -> None:
    for name in ("demo", SPANISH):
        status = line.models.wait_status(
            lambda s: condition(s, "Routed").get("status") == "True", f"{name} Routed", name=name
        )
        routed = condition(status, "Routed")
        print(f"{name}: Routed {routed['status']} {routed['reason']}: {routed['message']}")
        assert "traefik" in routed["message"] and "envoy" in routed["message"], routed


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_transcription_for_support_es_reaches_it(line: Line, gateway: str) -> None:
    file = ("sample.wav", SAMPLE_WAV, "audio/wav")
    plain = line.client(gateway)
    by_header = line.client(gateway, **{"x-kubescribe-model": ALIAS})
    by_path = line.client(gateway, f"/models/{ALIAS}/v1")
    seen = {
        "header": line.answered_by(
            lambda: by_header.audio.transcriptions.create(model=ALIAS, file=file)
        ),
        "path": line.answered_by(
            lambda: by_path.audio.transcriptions.create(model=ALIAS, file=file)
        ),
        "english by path": line.answered_by(
            lambda: line.client(gateway, "/models/demo/v1").audio.transcriptions.create(
                model="demo", file=file
            )
        ),
    }
    if gateway == "envoy":  # the multipart `model` field alone (the Lua filter)
        seen["body"] = line.answered_by(
            lambda: plain.audio.transcriptions.create(model=ALIAS, file=file)
        )
        seen["english by body"] = line.answered_by(
            lambda: plain.audio.transcriptions.create(model="demo", file=file)
        )
    print(f"{gateway}: answered by {seen}")
    assert seen.pop("english by path") == "demo"
    assert seen.pop("english by body", "demo") == "demo"
    assert set(seen.values()) == {SPANISH}, seen


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_a_realtime_session_for_support_es_reaches_it(line: Line, gateway: str) -> None:
    audio = pcm24(SAMPLE)
    events: list[str] = []

    def session() -> None:
        with line.client(gateway).realtime.connect(
            model=ALIAS, extra_query={"intent": "transcription"}
        ) as conn:
            conn.session.update(session={
                "type": "transcription",
                "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000},
                                    "transcription": {"model": ALIAS, "language": "es"},
                                    "turn_detection": None}},
            })  # fmt: skip
            for offset in range(0, len(audio), 4800):
                chunk = audio[offset : offset + 4800]
                conn.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
            conn.input_audio_buffer.commit()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                event = conn.recv()
                events.append(event.type)
                assert event.type != "error", event
                if event.type == "conversation.item.input_audio_transcription.completed":
                    return
            raise AssertionError(f"no completed transcription: {events}")

    model = line.answered_by(session, "kubescribe_realtime_turns_total")
    print(f"{gateway}: realtime ?model={ALIAS} answered by {model}; events {events[:3]}...")
    assert model == SPANISH


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_spanish_without_a_model_reaches_the_spanish_default(line: Line, gateway: str) -> None:
    file = ("sample.wav", SAMPLE_WAV, "audio/wav")
    # Envoy: the multipart `language` field (model left empty); Traefik: the header, since it
    # cannot route on a body field (examples/gateways/README.md).
    headers = {} if gateway == "envoy" else {"x-kubescribe-language": "es"}
    client = line.client(gateway, **headers)
    spanish = line.answered_by(
        lambda: client.audio.transcriptions.create(model="", language="es", file=file)
    )
    print(f"{gateway}: language=es with no model answered by {spanish}")
    assert spanish == SPANISH


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_an_unknown_model_is_openais_404(line: Line, gateway: str) -> None:
    with pytest.raises(openai.NotFoundError) as refused:
        line.client(gateway).audio.transcriptions.create(
            model="whisper-1", file=("sample.wav", SAMPLE_WAV, "audio/wav")
        )
    print(f"{gateway}: model=whisper-1 -> {refused.value.status_code} {refused.value.body}")
    assert refused.value.response.headers["content-type"].startswith("application/json")
    assert refused.value.body["code"] == "model_not_found", refused.value.body  # type: ignore[index]


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_models_list_shows_every_model(line: Line, gateway: str) -> None:
    client = line.client(gateway)
    listed: list[str] = []

    def every_model() -> bool:
        listed[:] = [m.id for m in client.models.list()]
        return {"demo", SPANISH, ALIAS} <= set(listed)

    # The catalogue is a ConfigMap volume: the kubelet refreshes it in the pods within a minute
    # or two of the other model's entry.
    t0 = time.monotonic()
    eventually(every_model, lambda: f"every model in models.list(): {listed}", timeout=180)
    print(f"{gateway}: models.list() -> {listed} (after {time.monotonic() - t0:.0f} s)")


@pytest.mark.parametrize("gateway", GATEWAYS)
def test_uploads_up_to_the_runtime_limit_pass_and_larger_get_its_413(
    line: Line, gateway: str
) -> None:
    headers = {} if gateway == "envoy" else {"x-kubescribe-model": ALIAS}
    client = line.client(gateway, **headers)
    at_limit = wav(MAX_UPLOAD - 4096)  # the multipart framing takes less than 4 KiB
    over = wav(MAX_UPLOAD + 256 * 1024)
    t0 = time.monotonic()
    model = line.answered_by(
        lambda: client.audio.transcriptions.create(model=ALIAS, file=("big.wav", at_limit))
    )
    took = time.monotonic() - t0
    refused: list[openai.APIStatusError] = []

    def too_large() -> None:
        with pytest.raises(openai.APIStatusError) as caught:
            client.audio.transcriptions.create(model=ALIAS, file=("bigger.wav", over))
        refused.append(caught.value)

    refused_by = line.answered_by(
        too_large, "kubescribe_requests_refused_total", reason="too_large"
    )
    error = refused[0]
    print(f"{gateway}: {len(at_limit)} B upload answered by {model} in {took:.1f} s; "
          f"{len(over)} B: {error.status_code} {error.body} from {refused_by}")  # fmt: skip
    assert model == SPANISH
    assert (error.status_code, refused_by) == (413, SPANISH)
    assert error.response.headers["content-type"].startswith("application/json")
    assert error.body["code"] == "file_too_large", error.body  # type: ignore[index]


# ---------------------------------------------------------------------- a rollout behind them
@dataclass
class GatewayLoad:
    """File requests for `demo` sent continuously through one gateway by one client thread."""

    gateway: str
    client: openai.OpenAI
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    last_ok: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.client.audio.transcriptions.create(
                    model="demo", file=("sample.wav", SAMPLE_WAV, "audio/wav")
                ).text
                if text:
                    self.ok += 1
                    self.last_ok = time.monotonic()
                else:
                    self.failed.append("empty transcript")
            except openai.OpenAIError as exc:
                self.failed.append(repr(exc)[:300])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(150)


def test_a_rolling_update_behind_both_gateways_fails_no_request(line: Line) -> None:
    # Envoy routes `demo` by the body's field; Traefik by the header.
    loads = [
        GatewayLoad("envoy", line.client("envoy")),
        GatewayLoad("traefik", line.client("traefik", **{"x-kubescribe-model": "demo"})),
    ]
    for load in loads:
        load.start()
    try:
        eventually(lambda: all(load.ok >= 2 for load in loads), "requests through both")
        t0 = time.monotonic()
        line.models.patch_spec("demo", {"model": {"version": "0.2.0"}})
        line.models.wait_status(is_ready("0.2.0"), "demo 0.2.0 Ready", timeout=400)
        rollout_s = time.monotonic() - t0
        done = time.monotonic()
        eventually(lambda: all(load.last_ok > done for load in loads), "served after it")
    finally:
        for load in loads:
            load.stop()
    figures = {load.gateway: (load.ok, len(load.failed)) for load in loads}
    print(f"rollout {rollout_s:.1f} s; (ok, failed) per gateway: {figures}")
    assert [f for load in loads for f in load.failed] == []


def test_no_request_of_the_gateways_or_the_operator_was_refused(line: Line) -> None:
    users = {service_account_user(NAMESPACE, ACCOUNT), OPERATOR_USER}
    refused = [
        f"{e.user} {e.verb} {e.uri}"
        for e in line.cluster.audit(line.audit_since)
        if e.user in users and e.code == 403
    ]
    assert refused == []
