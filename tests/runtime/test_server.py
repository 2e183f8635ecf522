"""The real `kubescribe serve` process on loopback, with the tone model (known transcripts):
routes, formats, errors, shared batches, readiness, drain on SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from kubescribe_runtime.app import create_app
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.service import Service
from kubescribe_runtime.transcriber import Transcriber
from rt_fixtures import encode, tone_sentence
from rt_server import ServerProcess, metric, post, running, start_server, wait_until

pytestmark = pytest.mark.xdist_group("runtime-server")


def expected(pattern: str) -> str:
    return " ".join("low" if w == "lo" else "high" for w in pattern.split())


@pytest.fixture(scope="module")
def server(tone_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(
        tone_dir, tmp_path_factory.mktemp("logs"), "--max-delay-ms", "150", "--max-batch-size", "8"
    ) as process:
        yield process


def transcribe(server: ServerProcess, data: bytes, **form: str) -> requests.Response:
    return post(server.url, data, model="tone-demo", mime="audio/wav", timeout=60, **form)


def test_probes_and_models(server: ServerProcess) -> None:
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "alive"}
    assert requests.get(server.url + "/readyz", timeout=5).json() == {"status": "ready"}
    (model,) = requests.get(server.url + "/v1/models", timeout=5).json()["data"]
    assert (model["id"], model["version"], model["object"]) == ("tone-demo", "1.0.0", "model")
    assert re.fullmatch(r"[0-9a-f]{64}", model["digest"])
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert f'kubescribe_model_info{{device="cpu",digest="{model["digest"]}"' in metrics
    assert "kubescribe_ready 1.0" in metrics


def test_response_formats(server: ServerProcess) -> None:
    audio = encode(tone_sentence("lo hi lo"))
    assert transcribe(server, audio).json() == {"text": "low high low"}
    text = transcribe(server, audio, response_format="text")
    assert text.text == "low high low\n" and text.headers["Content-Type"].startswith("text/plain")
    verbose = transcribe(
        server, audio, response_format="verbose_json", **{"timestamp_granularities[]": "word"}
    ).json()
    assert [w["word"] for w in verbose["words"]] == ["low", "high", "low"]
    assert abs(verbose["words"][1]["start"] - 1.2) <= 0.04
    srt = transcribe(server, audio, response_format="srt").text
    assert srt.startswith("1\n00:00:00,400 --> ") and "low high low" in srt
    assert transcribe(server, audio, response_format="vtt").text.startswith(
        "WEBVTT\n\n00:00:00.400"
    )


def test_concurrent_requests_share_batches(server: ServerProcess) -> None:
    before_count = metric(server, "kubescribe_batch_size_count")
    before_sum = metric(server, "kubescribe_batch_size_sum")
    patterns = ["lo hi", "hi lo", "lo lo hi", "hi hi lo", "lo hi lo", "hi lo hi", "hi lo lo"] * 2
    with ThreadPoolExecutor(len(patterns)) as pool:
        answers = list(pool.map(lambda p: transcribe(server, encode(tone_sentence(p))), patterns))
    assert [a.json()["text"] for a in answers] == [expected(p) for p in patterns]
    batches = metric(server, "kubescribe_batch_size_count") - before_count
    windows = metric(server, "kubescribe_batch_size_sum") - before_sum
    assert windows == len(patterns)
    assert batches < windows  # some batches held several requests


def test_gpu_requested_without_cuda_stays_unready(tone_dir: Path, tmp_path: Path) -> None:
    process = start_server(tone_dir, tmp_path, "--device", "gpu", ready=False)
    try:
        deadline = time.monotonic() + 30
        while (answer := requests.get(process.url + "/readyz", timeout=5)).json()[
            "status"
        ] == "loading" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.status_code == 503
        assert answer.json()["status"] == "failed"
        assert "CUDAExecutionProvider" in answer.json()["reason"]
        refused = transcribe(process, encode(tone_sentence("lo hi")))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
    finally:
        assert process.stop() == 0


def test_with_exit_on_load_failure_a_model_that_cannot_load_ends_the_server(
    tone_dir: Path, tmp_path: Path
) -> None:
    # What the operator renders in a pod: a permanent load failure crash-loops with its reason
    # in the last log lines (the termination message) instead of sitting unready.
    try:
        process = start_server(
            tone_dir, tmp_path, "--device", "gpu", "--exit-on-load-failure", ready=False
        )
    except RuntimeError as exited:  # it failed before /healthz first answered
        status, log = str(exited).split(":", 1)
        assert status == "server exited with 3", status
    else:
        status = process.process.wait(60)
        log = process.log()
        assert status == 3, log
    assert "exiting: the model cannot be loaded" in log and "CUDAExecutionProvider" in log


def test_sigterm_drains_accepted_requests(tone_dir: Path, tmp_path: Path) -> None:
    # Requests held in the batcher for 3 s (the whole delay, even with nobody else coming).
    process = start_server(
        tone_dir,
        tmp_path,
        "--max-delay-ms",
        "3000",
        "--batch-wait-full-delay",
        "--max-batch-size",
        "64",
    )
    patterns = ["lo hi", "hi lo", "lo lo hi", "hi lo hi", "lo hi lo", "hi hi lo", "lo hi hi"]
    with ThreadPoolExecutor(len(patterns)) as pool:
        futures = [pool.submit(transcribe, process, encode(tone_sentence(p))) for p in patterns]
        deadline = time.monotonic() + 20
        while metric(process, "kubescribe_requests_in_flight") < len(patterns):
            assert time.monotonic() < deadline, "requests never got in flight"
            time.sleep(0.02)
        process.process.send_signal(signal.SIGTERM)
        # draining: unready, new work refused with Retry-After, accepted work still running
        deadline = time.monotonic() + 10
        while requests.get(process.url + "/readyz", timeout=5).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        late = transcribe(process, encode(tone_sentence("lo hi")))
        assert late.status_code == 503 and late.headers["Retry-After"]
        assert late.json()["error"]["message"].startswith("the server is shutting down")
        answers = [f.result(30) for f in futures]
    assert [a.status_code for a in answers] == [200] * len(patterns)
    assert [a.json()["text"] for a in answers] == [expected(p) for p in patterns]
    assert process.process.wait(30) == 0
    assert "drained: every accepted request completed" in process.log()


# -- in-process: the queue-full and timeout answers, made deterministic with a gated model ---


@pytest.fixture
def gated_app(
    tone_dir: Path,
) -> Iterator[tuple[object, threading.Event, threading.Event, Service]]:
    config = ServeConfig(
        model_dir=tone_dir,
        max_requests=2,
        max_batch_size=1,
        max_delay_ms=0,
        request_timeout_s=2,
        vad="off",  # tones are no speech to Silero VAD: every window must reach the model
    )
    service = Service(config)
    service.load()
    assert service.transcriber is not None
    gate, running = threading.Event(), threading.Event()
    batcher = service.transcriber.batcher
    real = batcher._run_batch

    def gated(items: list[object]) -> list[object]:
        running.set()
        gate.wait(30)
        return real(items)  # type: ignore[arg-type]

    batcher._run_batch = gated  # type: ignore[assignment]
    yield create_app(service).test_client(), gate, running, service
    gate.set()
    service.close()


def _post(client: object, data: bytes) -> object:
    return client.post(  # type: ignore[attr-defined]
        "/v1/audio/transcriptions",
        data={"file": (__import__("io").BytesIO(data), "a.wav"), "model": "x"},
        content_type="multipart/form-data",
    )


def test_over_the_admission_limit_is_429_with_retry_after_and_no_progress_is_504(
    gated_app: tuple[object, threading.Event, threading.Event, Service],
) -> None:
    client, gate, running, service = gated_app
    audio = encode(tone_sentence("lo hi"))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, client, audio)  # taken by the worker, stuck at the gate
        assert running.wait(30)
        second = pool.submit(_post, client, audio)  # admitted: waits behind the first
        wait_until(lambda: service.admission.requests == 2, "the second request admitted")
        third = _post(client, audio)  # --max-requests 2: refused before any work
        assert third.status_code == 429  # type: ignore[attr-defined]
        assert int(third.headers["Retry-After"]) >= 1  # type: ignore[attr-defined]
        assert third.json["error"]["code"] == "too_many_requests"  # type: ignore[attr-defined]
        timed_out = first.result(30)  # nothing decoded for 2 s
        assert timed_out.status_code == 504  # type: ignore[attr-defined]
        assert timed_out.json["error"]["type"] == "server_error"  # type: ignore[attr-defined]
        gate.set()
        assert second.result(30).status_code in (200, 504)  # type: ignore[attr-defined]
    # after the storm, the same service answers correctly
    answer = _post(client, audio)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert json.loads(answer.data)["text"] == "low high"  # type: ignore[attr-defined]
    assert service.admission.requests == 0 and service.admission.backlog_s == 0


def test_unknown_route_is_json(server: ServerProcess) -> None:
    answer = requests.get(server.url + "/v1/nope", timeout=5)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_ready_only_after_load_and_warm_up(tone_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = Service(ServeConfig(model_dir=tone_dir))
    client = create_app(service).test_client()
    warmed: list[bool] = []
    original = Transcriber.warm_up

    def warm_up(self: Transcriber) -> None:
        # while warming up, the server is still unready
        assert client.get("/readyz").status_code == 503
        original(self)
        warmed.append(True)

    monkeypatch.setattr(Transcriber, "warm_up", warm_up)
    loading = client.get("/readyz")
    assert loading.status_code == 503 and loading.json == {
        "status": "loading",
        "reason": "the model is loading",
    }
    assert client.get("/v1/models").status_code == 503
    assert client.get("/healthz").status_code == 200
    service.load()
    assert warmed == [True]
    assert client.get("/readyz").json == {"status": "ready"}
    service.begin_drain()
    assert client.get("/readyz").json["status"] == "draining"
    service.close()


def test_metrics_follow_the_requests(server: ServerProcess) -> None:
    names = (
        'kubescribe_requests_total{code="200"}',
        'kubescribe_requests_total{code="415"}',
        'kubescribe_request_duration_seconds_count{code="200"}',
        'kubescribe_request_duration_seconds_count{code="415"}',
        "kubescribe_audio_duration_seconds_sum",
        "kubescribe_real_time_factor_ratio_count",
        "kubescribe_batch_size_count",
    )
    before = {n: _metric_or_zero(server, n) for n in names}
    audio = tone_sentence("lo hi hi")
    assert transcribe(server, encode(audio)).status_code == 200
    assert transcribe(server, b"plain text, not audio").status_code == 415
    after = {n: _metric_or_zero(server, n) for n in names}
    delta = dict(zip(names, (after[n] - before[n] for n in names), strict=True))
    assert delta == {
        'kubescribe_requests_total{code="200"}': 1,
        'kubescribe_requests_total{code="415"}': 1,
        'kubescribe_request_duration_seconds_count{code="200"}': 1,
        'kubescribe_request_duration_seconds_count{code="415"}': 1,
        "kubescribe_audio_duration_seconds_sum": pytest.approx(len(audio) / 16000, abs=1e-3),
        "kubescribe_real_time_factor_ratio_count": 1,
        "kubescribe_batch_size_count": 1,
    }
    assert metric(server, "kubescribe_queued_windows") == 0
    assert metric(server, "kubescribe_requests_in_flight") == 0


def _metric_or_zero(server: ServerProcess, name: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
