"""The Realtime sessions' Prometheus metrics, registered in the server's registry beside the
HTTP ones (same ``kubescribe_`` prefix and conventions; listed in docs/api.md and
docs/operations.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PARTIAL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
# Why a session ended; each exported at 0 from the start (see metrics.INITIAL_CODES).
END_REASONS = (
    "client_closed",
    "idle",
    "unconfigured",
    "expired",
    "draining",
    "refused",
    "slow_client",
    "backlog",
    "error",
)
VAD_EVENTS = ("speech_started", "speech_stopped")


class RealtimeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.sessions_active = Gauge(
            "kubescribe_realtime_sessions_active", "Realtime sessions open", registry=r
        )
        self.sessions = Counter(
            "kubescribe_realtime_sessions",
            "Realtime sessions ended, by reason",
            ["reason"],
            registry=r,
        )
        for reason in END_REASONS:
            self.sessions.labels(reason)
        self.turns = Counter(
            "kubescribe_realtime_turns",
            "Turns committed (by server VAD or by the client)",
            registry=r,
        )
        self.partial_latency = Histogram(
            "kubescribe_realtime_partial_latency_seconds",
            "From the arrival of a word's last audio to the delta that carries it",
            buckets=PARTIAL_BUCKETS,
            registry=r,
        )
        self.vad_events = Counter(
            "kubescribe_realtime_vad_events",
            "Server VAD events sent",
            ["event"],
            registry=r,
        )
        for event in VAD_EVENTS:
            self.vad_events.labels(event)
        self.audio_seconds = Counter(
            "kubescribe_realtime_audio_seconds",
            "Audio streamed into realtime sessions",
            registry=r,
        )
        self.errors = Counter(
            "kubescribe_realtime_errors",
            "error events sent to realtime clients",
            registry=r,
        )
