"""What a runtime pod needs, derived from the runtime settings it will run with (pure).

The settings are the runtime's defaults (docs/runtime-config.md; a test keeps the copies below
equal to ``kubescribe_runtime.config``), the SpeechModel's fields that render them
(``runtime.batching.maxBatchSize``, ``runtime.drainTimeoutSeconds``), and any literal value the
user sets in ``runtime.env`` (which wins, as it does in the pod).

Memory (MiB), when ``runtime.resources`` does not say:

    load    = max_requests × (spool_threshold_mb + DECODE_MIB)           upload bodies + decoders
            + (max_queue + max_batch_size) × window_seconds × FEATURES_MIB_PER_S   queued windows
            + max_batch_size × window_seconds × ACTIVATIONS_MIB_PER_S   one batch in the model
            + max_sessions × (SESSION_MIB                               realtime sessions
                              + session_max_backlog_seconds × BACKLOG_MIB_PER_S)
    request = BASE_MIB + load
    limit   = 2 × request

``BASE_MIB`` covers the interpreter, onnxruntime and a model of a few hundred MB; with the
defaults the request is about 2 GiB and the limit about 4 GiB. A realtime session holds at most
``--session-max-backlog-seconds`` of audio not yet transcribed (its buffer, its queued decodes
and their features) and a bounded WebSocket inbox (four frames of up to twice
``--max-append-kb``).
``python -m bench.load`` measures the peak RSS of the demo model under 90 concurrent 25 MB
uploads against this limit.

Scratch volume: spooled uploads, at most ``2 × max_requests × max_upload_mb`` (admitted, and
being received).

Termination: ``PRE_STOP_SECONDS`` (endpoints drop the pod) + the longest drain (admitted requests,
``--drain-timeout``; a longest realtime session drain, when set, counts the same way) + a margin,
so that SIGKILL never cuts a drain short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

PRE_STOP_SECONDS = 5  # time for endpoints to drop the pod before SIGTERM starts the drain
GRACE_MARGIN_SECONDS = 10

BASE_MIB = 1024
DECODE_MIB = 4  # per request: a 2 s decode block, the resampler, a 20 s window and its features
FEATURES_MIB_PER_S = 0.04  # 80 log-mel bins × 100 frames/s × float32, with slack
ACTIVATIONS_MIB_PER_S = 2.0  # a Conformer-CTC's activations per second of audio in a batch
SESSION_MIB = 8  # a session's WebSocket inbox (4 frames of up to 1 MiB), resampler, thread
# Per second of a session's backlog: 16 kHz float32 samples (0.06 MiB) held in the buffer and
# again in a queued decode, their features; a session is closed at 1.5 times its backlog.
BACKLOG_MIB_PER_S = 0.25


@dataclass(frozen=True)
class RuntimeSettings:
    """The runtime settings a pod's size depends on (defaults: the runtime's)."""

    max_requests: int = 32
    spool_threshold_mb: float = 1.0
    max_upload_mb: float = 25.0
    max_queue: int = 64
    max_batch_size: int = 16
    window_seconds: float = 20.0
    drain_timeout_s: float = 30.0
    max_sessions: int = 8
    session_max_backlog_seconds: float = 60.0

    @classmethod
    def resolve(
        cls, rendered: Mapping[str, object], user_env: Mapping[str, str]
    ) -> RuntimeSettings:
        """Defaults, then what the operator renders, then the user's literal variables."""
        values: dict[str, object] = {}
        for field in fields(cls):
            variable = ENV[field.name]
            raw = user_env.get(variable, rendered.get(variable))
            if raw is None:
                continue
            kind = int if field.type in ("int", int) else float
            try:
                values[field.name] = kind(float(str(raw)))
            except ValueError:
                continue  # the runtime refuses it at start-up, with the flag's name
        return cls(**values)  # type: ignore[arg-type]


ENV = {
    "max_requests": "KUBESCRIBE_MAX_REQUESTS",
    "spool_threshold_mb": "KUBESCRIBE_SPOOL_THRESHOLD_MB",
    "max_upload_mb": "KUBESCRIBE_MAX_UPLOAD_MB",
    "max_queue": "KUBESCRIBE_MAX_QUEUE",
    "max_batch_size": "KUBESCRIBE_MAX_BATCH_SIZE",
    "window_seconds": "KUBESCRIBE_WINDOW_SECONDS",
    "drain_timeout_s": "KUBESCRIBE_DRAIN_TIMEOUT_S",
    "max_sessions": "KUBESCRIBE_MAX_SESSIONS",
    "session_max_backlog_seconds": "KUBESCRIBE_SESSION_MAX_BACKLOG_SECONDS",
}


def memory_mib(s: RuntimeSettings) -> tuple[int, int]:
    """(request, limit) of the runtime container's memory, in MiB (module docstring)."""
    load = (
        s.max_requests * (s.spool_threshold_mb + DECODE_MIB)
        + (s.max_queue + s.max_batch_size) * s.window_seconds * FEATURES_MIB_PER_S
        + s.max_batch_size * s.window_seconds * ACTIVATIONS_MIB_PER_S
        + s.max_sessions * (SESSION_MIB + s.session_max_backlog_seconds * BACKLOG_MIB_PER_S)
    )
    request = math.ceil(BASE_MIB + load)
    return request, 2 * request


def scratch_mib(s: RuntimeSettings) -> int:
    """Size limit of the scratch emptyDir: every admitted upload spooled at its largest, and
    as much again of uploads being received (the runtime's intake holds that much at most)."""
    return math.ceil(2 * s.max_requests * s.max_upload_mb)


def termination_grace_seconds(s: RuntimeSettings, session_drain_s: float = 0.0) -> int:
    return math.ceil(
        PRE_STOP_SECONDS + max(s.drain_timeout_s, session_drain_s) + GRACE_MARGIN_SECONDS
    )
