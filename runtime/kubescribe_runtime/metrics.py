"""Prometheus metrics of contract 3, all prefixed ``kubescribe_``, in a registry per server."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
AUDIO_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kubescribe_requests",
            "Transcription requests by HTTP status code",
            ["code"],
            registry=r,
        )
        self.latency = Histogram(
            "kubescribe_request_duration_seconds",
            "Time to answer a transcription request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_duration = Histogram(
            "kubescribe_audio_duration_seconds",
            "Duration of the transcribed audio",
            buckets=AUDIO_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "kubescribe_real_time_factor",
            "Processing time divided by audio duration",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "kubescribe_batch_size",
            "Windows per model batch formed by the dynamic batcher",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "kubescribe_queue_depth", "Windows waiting for the batcher", registry=r
        )
        self.in_flight = Gauge(
            "kubescribe_requests_in_flight", "Transcription requests being served", registry=r
        )
        self.ready = Gauge("kubescribe_ready", "1 when the server is ready", registry=r)
        self.model_info = Gauge(
            "kubescribe_model_info",
            "The served model (value 1)",
            ["name", "version", "digest", "model_file", "device"],
            registry=r,
        )

    def set_model(self, name: str, version: str, digest: str, model_file: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, digest, model_file, device).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
