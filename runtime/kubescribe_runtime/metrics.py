"""Prometheus metrics of contract 3, all prefixed ``kubescribe_``, in a registry per server,
next to the standard process collector (``process_resident_memory_bytes``,
``process_cpu_seconds_total``, ``process_open_fds``, ...).

Names follow Prometheus' conventions: base units in the name (``_seconds``, ``_bytes``), ``_total``
on counters (added by the client), ``_ratio`` on unitless ratios, and the thing a count counts
(``windows``, ``requests``). docs/api.md and docs/operations.md list every name.

Who reports what: the HTTP routes (``requests``, ``latency`` by status code, ``audio_duration``,
``real_time_factor``), the service (``in_flight``, ``ready``, ``refused`` by reason), the batcher
(``batch_size``, ``queue_depth``, ``queue_wait``, ``batch_inference``), the pipeline
(``audio_processed``, ``windows_skipped``, ``windows_cancelled`` by reason).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from kubescribe_runtime.realtime.metrics import RealtimeMetrics
from kubescribe_runtime.scheduling import Priority

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
AUDIO_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# Status codes exported at 0 from the start: the alerts' rate() sees a pod's first error only if
# its series existed before it (a series born at 1 has no step to measure).
INITIAL_CODES = ("200", "400", "429", "500", "503", "504")
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Why a request was refused before any work (429/503), and why queued windows were dropped; each
# exported at 0 from the start, like the status codes.
# Refused before any work: admission (429), readiness (503), and the intake's refusals of a
# request not read whole in time or too large (408, 413, 431; see intake.py).
REFUSAL_REASONS = (
    "requests",
    "backlog",
    "draining",
    "not_ready",
    "header_timeout",
    "body_too_slow",
    "too_large",
    "header_too_large",
    "connections",
)
CANCEL_REASONS = ("disconnected", "timeout", "error")


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
        for code in INITIAL_CODES:
            self.requests.labels(code)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.latency = Histogram(
            "kubescribe_request_duration_seconds",
            "Time to answer a transcription request, by HTTP status code",
            ["code"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        for code in INITIAL_CODES:
            self.latency.labels(code)
        self.refused = Counter(
            "kubescribe_requests_refused",
            "Requests refused before any work, by reason (requests/backlog: 429, "
            "draining/not_ready: 503, header_timeout/body_too_slow: 408, too_large: 413, "
            "header_too_large: 431, connections: 503 at --max-connections)",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        # By the batcher's priority class (live: Realtime sessions, short: one-window requests,
        # file: longer ones); a batch's class is its head's.
        self.queue_wait = Histogram(
            "kubescribe_queue_wait_seconds",
            "Time a window waited in the batcher's queue before its batch started",
            ["priority"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.batch_inference = Histogram(
            "kubescribe_batch_inference_seconds",
            "Time the model took to run one batch (features excluded)",
            ["priority"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        for priority in Priority:
            self.queue_wait.labels(priority.label)
            self.batch_inference.labels(priority.label)
        self.audio_processed = Counter(
            "kubescribe_audio_processed_seconds",
            "Seconds of audio decoded by the model (windows skipped as non-speech excluded)",
            registry=r,
        )
        self.windows_skipped = Counter(
            "kubescribe_windows_skipped",
            "Windows not decoded because they hold no speech (voice activity detection)",
            registry=r,
        )
        self.windows_cancelled = Counter(
            "kubescribe_windows_cancelled",
            "Queued windows dropped before decoding, by reason",
            ["reason"],
            registry=r,
        )
        for reason in CANCEL_REASONS:
            self.windows_cancelled.labels(reason)
        self.audio_duration = Histogram(
            "kubescribe_audio_duration_seconds",
            "Duration of the transcribed audio",
            buckets=AUDIO_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "kubescribe_real_time_factor_ratio",
            "Processing time divided by audio duration",
            buckets=RTF_BUCKETS,
            registry=r,
        )
        self.batch_frames = Counter(
            "kubescribe_batch_frames",
            "Model input frames (or samples) run in batches: audio, or padding up to the longest",
            ["kind"],
            registry=r,
        )
        for kind in ("audio", "padding"):
            self.batch_frames.labels(kind)
        self.batch_size = Histogram(
            "kubescribe_batch_size",
            "Windows per model batch formed by the dynamic batcher",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "kubescribe_queued_windows", "Windows waiting in the batcher's queue", registry=r
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
        # The quality gate's verdict on the artifact's reference clips (quality_gate.py); no
        # series when the gate was skipped.
        self.reference_wer = Gauge(
            "kubescribe_quality_gate_wer_ratio",
            "WER on the artifact's reference clips: measured at start-up, and declared by the "
            "manifest",
            ["kind"],
            registry=r,
        )
        self.quality_gate_passed = Gauge(
            "kubescribe_quality_gate_passed",
            "1 when the start-up quality gate passed, 0 when it refused the model",
            registry=r,
        )
        # The realtime sessions' series (kubescribe_realtime_*), in the same registry.
        self.realtime = RealtimeMetrics(r)

    def set_model(self, name: str, version: str, digest: str, model_file: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, version, digest, model_file, device).set(1)

    def set_quality_gate(self, passed: bool, measured: float, declared: float) -> None:
        self.quality_gate_passed.set(1 if passed else 0)
        self.reference_wer.labels("measured").set(measured)
        self.reference_wer.labels("declared").set(declared)

    def observe_queue_wait(self, seconds: float, priority: Priority) -> None:
        self.queue_wait.labels(priority.label).observe(seconds)

    def observe_batch_inference(self, seconds: float, priority: Priority) -> None:
        self.batch_inference.labels(priority.label).observe(seconds)

    def observe_batch_lengths(self, lengths: list[int]) -> None:
        """One batch's input lengths: the padding ratio is padding / audio frames."""
        self.batch_frames.labels("audio").inc(sum(lengths))
        self.batch_frames.labels("padding").inc(
            max(lengths, default=0) * len(lengths) - sum(lengths)
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
