"""The runtime's Prometheus metrics: what an SRE needs, named by Prometheus' conventions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from kubescribe_runtime.app import create_app
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.metrics import CANCEL_REASONS, REFUSAL_REASONS, Metrics
from kubescribe_runtime.service import Service
from prometheus_client.parser import text_string_to_metric_families
from rt_calls import sentences
from rt_fixtures import TONE_TOKENS, encode, write_artifact


def families() -> dict[str, object]:
    text = Metrics().exposition().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    "name",
    [
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "kubescribe_queue_wait_seconds",
        "kubescribe_batch_inference_seconds",
        "kubescribe_audio_processed_seconds",
        "kubescribe_windows_cancelled",
        "kubescribe_windows_skipped",
        "kubescribe_requests_refused",
    ],
)
def test_the_series_an_sre_needs_are_exported(name: str) -> None:
    assert name in families()


def test_names_follow_prometheus_conventions() -> None:
    for name, family in families().items():
        kind = getattr(family, "type", "")
        if not name.startswith("kubescribe_") or name.endswith("_created"):
            continue
        if "seconds" in name or "duration" in name:
            assert name.endswith("_seconds"), name
        assert not name.endswith("_total"), f"{name}: the client adds _total to counters"
        assert kind in {"counter", "gauge", "histogram"}, (name, kind)


@pytest.mark.parametrize(
    ("name", "old"),
    [
        ("kubescribe_real_time_factor_ratio", "kubescribe_real_time_factor"),  # a ratio
        ("kubescribe_queued_windows", "kubescribe_queue_depth"),  # says what it counts
    ],
)
def test_names_say_their_unit(name: str, old: str) -> None:
    names = families()
    assert name in names and old not in names


def test_request_latency_carries_the_status_code() -> None:
    metrics = Metrics()
    metrics.latency.labels("429").observe(0.01)
    found = samples(metrics)
    assert found[("kubescribe_request_duration_seconds_count", (("code", "429"),))] == 1
    assert found[("kubescribe_request_duration_seconds_count", (("code", "200"),))] == 0


@pytest.mark.parametrize(
    ("series", "reasons"),
    [
        ("kubescribe_requests_refused_total", REFUSAL_REASONS),
        ("kubescribe_windows_cancelled_total", CANCEL_REASONS),
    ],
)
def test_reasons_are_exported_at_zero_from_the_start(series: str, reasons: tuple[str, ...]) -> None:
    found = samples(Metrics())
    for reason in reasons:
        assert found[(series, (("reason", reason),))] == 0


def test_each_server_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.windows_skipped.inc()
    assert samples(first)[("kubescribe_windows_skipped_total", ())] == 1
    assert samples(second)[("kubescribe_windows_skipped_total", ())] == 0


# -- the series move with the work (Flask's test client, the tone model) ----------------------


def test_a_request_moves_the_pipeline_series(tmp_path: Path) -> None:
    service = Service(ServeConfig(model_dir=write_artifact(tmp_path / "tone", TONE_TOKENS)))
    service.load()
    client = create_app(service).test_client()
    # Real speech after the silence: the VAD (Silero) hears tones as no speech.
    (speech,) = sentences([0])
    audio = np.concatenate([silence_of(25.0), speech.audio])
    try:
        answer = client.post(
            "/v1/audio/transcriptions",
            data={"file": (io.BytesIO(encode(audio)), "a.wav")},
            content_type="multipart/form-data",
        )
    finally:
        service.close()
    assert answer.status_code == 200, answer.json
    value = service.metrics.registry.get_sample_value
    assert value("kubescribe_windows_skipped_total") == 1  # the first 20 s window: silence
    decoded = value("kubescribe_audio_processed_seconds_total")
    assert decoded is not None and 0 < decoded < len(audio) / 16000 - 15
    # the second window: speech of a 26 s request, a file's class
    assert value("kubescribe_queue_wait_seconds_count", {"priority": "file"}) == 1
    assert value("kubescribe_batch_inference_seconds_count", {"priority": "file"}) == 1
    assert value("kubescribe_request_duration_seconds_count", {"code": "200"}) == 1
    assert (value("process_resident_memory_bytes") or 0) > 0


def test_a_request_of_one_window_is_counted_in_the_short_class(tmp_path: Path) -> None:
    """The batcher's priority classes: a clip that fits one window is short work, not a file."""
    service = Service(ServeConfig(model_dir=write_artifact(tmp_path / "tone", TONE_TOKENS)))
    service.load()
    client = create_app(service).test_client()
    (speech,) = sentences([0])
    try:
        answer = client.post(
            "/v1/audio/transcriptions",
            data={"file": (io.BytesIO(encode(speech.audio)), "a.wav")},
            content_type="multipart/form-data",
        )
    finally:
        service.close()
    assert answer.status_code == 200, answer.json
    value = service.metrics.registry.get_sample_value
    assert value("kubescribe_queue_wait_seconds_count", {"priority": "short"}) == 1
    assert value("kubescribe_queue_wait_seconds_count", {"priority": "file"}) == 0


def silence_of(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)
