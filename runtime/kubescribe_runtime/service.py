"""The serving state: model loading and warm-up, readiness, in-flight requests, draining."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Generator, Iterator
from enum import StrEnum

from kubescribe.errors import KubescribeError
from kubescribe_runtime.artifact import Artifact, load_artifact
from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.metrics import Metrics
from kubescribe_runtime.model import AcousticModel
from kubescribe_runtime.transcriber import PipelineSettings, Progress, Transcriber, Transcript

log = logging.getLogger(__name__)


class NotReady(KubescribeError):
    """The model is not loaded (yet), failed to load, or the server is draining."""


class State(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"


def build_transcriber(config: ServeConfig, metrics: Metrics | None = None) -> Transcriber:
    """Artifact → verified model → batcher → pipeline, as configured."""
    artifact: Artifact = load_artifact(config.model_dir, config.model_file)
    model = AcousticModel(
        artifact,
        device=config.device,
        gpu_id=config.gpu_id,
        allow_cpu_fallback=config.allow_cpu_fallback,
        threads=config.threads,
    )
    batcher = DynamicBatcher(
        model.infer,
        max_batch_size=config.max_batch_size,
        max_delay_s=config.max_delay_ms / 1000,
        max_queue=config.max_queue,
        on_batch=metrics.batch_size.observe if metrics else None,
        on_queue_depth=metrics.queue_depth.set if metrics else None,
        close_when_idle=not config.batch_wait_full_delay,
    )
    settings = PipelineSettings(
        window_seconds=config.window_seconds,
        window_overlap_seconds=config.window_overlap_seconds,
        max_audio_seconds=config.max_audio_seconds,
        request_timeout_s=config.request_timeout_s,
    )
    return Transcriber(model, batcher, settings)


class Service:
    def __init__(self, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.state = State.LOADING
        self.reason = "the model is loading"
        self.transcriber: Transcriber | None = None
        self._in_flight = 0
        self._idle = threading.Condition()

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load, verify and warm up the model; on failure stay unready with the reason."""
        try:
            transcriber = build_transcriber(self.config, self.metrics)
            transcriber.warm_up()
        except KubescribeError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:
            log.exception("model load failed")
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self.transcriber = transcriber
        model = transcriber.model
        self.metrics.set_model(
            model.manifest.name,
            model.manifest.version,
            model.artifact.digest,
            self.config.model_file,
            model.device,
        )
        with self._idle:
            if self.state is State.LOADING:
                self.state = State.READY
                self.reason = ""
                self.metrics.ready.set(1)
        log.info(
            "serving %s %s (%s, digest %s) on %s",
            model.manifest.name,
            model.manifest.version,
            self.config.model_file,
            model.artifact.digest[:12],
            ",".join(model.providers),
        )

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="kubescribe-load", daemon=True)
        thread.start()
        return thread

    def _fail(self, reason: str) -> None:
        log.error("not ready: %s", reason)
        with self._idle:
            if self.state is State.LOADING:
                self.state = State.FAILED
            self.reason = reason

    def begin_drain(self) -> None:
        with self._idle:
            self.state = State.DRAINING
            self.reason = "the server is shutting down"
            self.metrics.ready.set(0)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no request is in flight (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        if self.transcriber is not None:
            self.transcriber.batcher.close(timeout=5)

    # -- requests ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count a transcription request in flight; refused once draining has begun."""
        with self._idle:
            if self.state is State.DRAINING:
                raise NotReady("the server is shutting down; retry on another replica")
            self._in_flight += 1
            self.metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
                self._idle.notify_all()

    def transcribe(self, data: bytes) -> Transcript:
        transcriber = self.transcriber
        if transcriber is None:
            raise NotReady(f"the model is not ready: {self.reason}")
        return transcriber.transcribe(data)

    def stream(self, data: bytes) -> Generator[Progress, None, None]:
        """The transcript window by window (``stream=true``); lazy: nothing runs until read."""
        transcriber = self.transcriber
        if transcriber is None:
            raise NotReady(f"the model is not ready: {self.reason}")
        return transcriber.stream(data)
