"""The serving state: model loading and warm-up, readiness, admission and in-flight requests,
liveness (the batcher's progress), draining."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO

from kubescribe.errors import KubescribeError
from kubescribe_runtime import audio
from kubescribe_runtime.admission import Admission, Refused, Ticket
from kubescribe_runtime.artifact import Artifact, load_artifact
from kubescribe_runtime.batcher import DynamicBatcher
from kubescribe_runtime.channels import merge_channels
from kubescribe_runtime.config import ServeConfig
from kubescribe_runtime.manifest import ArtifactManifest
from kubescribe_runtime.metrics import Metrics
from kubescribe_runtime.model import AcousticModel, SessionSettings, frame_seconds
from kubescribe_runtime.quality_gate import (
    SKIPPED_DISABLED,
    SKIPPED_NO_CLIPS,
    GateResult,
    run_gate,
)
from kubescribe_runtime.realtime.decode import SessionDecoder
from kubescribe_runtime.scheduling import Priority
from kubescribe_runtime.transcriber import PipelineSettings, Progress, Transcriber, Transcript

log = logging.getLogger(__name__)
# A worker that exits with gunicorn's WORKER_BOOT_ERROR makes the master halt with it too: the
# whole server exits 3 (--exit-on-load-failure).
LOAD_FAILURE_EXIT = 3
# The container's termination message (Kubernetes' default terminationMessagePath): the reason
# alone, rather than the log tail the kubelet falls back to.
TERMINATION_LOG = Path("/dev/termination-log")


# A batch pads its windows to the longest: windows join one only when the longest is at most
# 25 % (the scheduler's ratio) plus this much longer than the shortest.
SIMILAR_LENGTH_SLACK_S = 1.0
# How long a file request's next window yields to live and short work at most (the batcher's CPU
# reserve): files progress at a window per this at the least, whatever the live load.
FILE_YIELD_S = 0.25


def units_per_second(manifest: ArtifactManifest) -> float:
    """The model input's length units (feature frames or samples) per second of audio."""
    return manifest.subsampling_factor / frame_seconds(manifest)


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
        session=SessionSettings(
            threads=config.threads,
            spinning=config.thread_spinning,
            cudnn_conv_algo_search=config.cudnn_conv_algo_search,
            gpu_mem_limit_mb=config.gpu_mem_limit_mb,
            io_binding=config.io_binding,
        ),
    )
    batcher = DynamicBatcher(
        model.infer,
        max_batch_size=config.max_batch_size,
        max_delay_s=config.max_delay_ms / 1000,
        max_queue=config.max_queue,
        on_batch=metrics.batch_size.observe if metrics else None,
        on_queue_depth=metrics.queue_depth.set if metrics else None,
        close_when_idle=not config.batch_wait_full_delay,
        length_slack=int(SIMILAR_LENGTH_SLACK_S * units_per_second(artifact.manifest)),
        on_queue_wait=metrics.observe_queue_wait if metrics else None,
        on_inference=metrics.observe_batch_inference if metrics else None,
        on_lengths=metrics.observe_batch_lengths if metrics else None,
        live_budget=int(config.live_batch_seconds * units_per_second(artifact.manifest)),
        # The CPU reserve and the urgent lane go with the live-first policy
        # (--live-batch-seconds 0: none of them).
        file_slots=max(1, model.threads // 2) if config.live_batch_seconds else 0,
        file_yield_s=FILE_YIELD_S,
        urgent_lane=config.live_batch_seconds > 0,
    )
    settings = PipelineSettings(
        window_seconds=config.window_seconds,
        window_overlap_seconds=config.window_overlap_seconds,
        max_audio_seconds=config.max_audio_seconds,
        max_audio_seconds_per_mb=config.max_audio_seconds_per_mb,
        request_timeout_s=config.request_timeout_s,
        vad=config.vad != "off",
    )
    return Transcriber(
        model,
        batcher,
        settings,
        on_decoded=metrics.audio_processed.inc if metrics else None,
        on_skipped=metrics.windows_skipped.inc if metrics else None,
        on_cancelled=(
            (lambda reason, n: metrics.windows_cancelled.labels(reason).inc(n)) if metrics else None
        ),
    )


class Service:
    def __init__(self, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.state = State.LOADING
        self.reason = "the model is loading"
        self.transcriber: Transcriber | None = None
        self.gate: GateResult | None = None  # the quality gate's verdict, once it ran
        self.admission = Admission(config.max_requests, config.max_backlog_seconds)
        self._in_flight = 0
        self._idle = threading.Condition()

    # -- lifecycle ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load, verify and warm up the model; on failure stay unready with the reason."""
        try:
            transcriber = build_transcriber(self.config, self.metrics)
            transcriber.warm_up()
            gate = self._quality_gate(transcriber)
        except KubescribeError as exc:
            self._fail(str(exc))
            return
        except Exception as exc:
            log.exception("model load failed")
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self.gate = gate
        if gate.passed is False:
            transcriber.batcher.close(timeout=5)  # never serves: nothing else will close it
            self._fail(gate.message, what=None)  # the verdict says it all
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

    def _quality_gate(self, transcriber: Transcriber) -> GateResult:
        """The reference clips through the serving pipeline, judged against the declared WER."""
        if self.config.quality_gate == "off":
            gate = GateResult(None, SKIPPED_DISABLED)
        else:
            model = transcriber.model
            gate = run_gate(
                lambda data: transcriber.transcribe(data).text,
                model.artifact.directory,
                model.manifest,
                self.config.model_file,
                self.config.quality_gate_wer_tolerance,
            )
        if gate.measured is not None and gate.declared is not None:
            self.metrics.set_quality_gate(bool(gate.passed), gate.measured, gate.declared)
        log.log(logging.ERROR if gate.passed is False else logging.INFO, "%s", gate.message)
        return gate

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.load, name="kubescribe-load", daemon=True)
        thread.start()
        return thread

    def _fail(self, reason: str, what: str | None = "the model cannot be loaded") -> None:
        log.error("not ready: %s", reason)
        with self._idle:
            if self.state is State.LOADING:
                self.state = State.FAILED
            self.reason = reason
        if self.config.exit_on_load_failure:
            # In a pod: a load failure is permanent, so crash (the kubelet restarts the
            # container, the operator sees CrashLoopBackOff with this line as the termination
            # message) rather than sit unready until the startup probe or the rollout deadline.
            message = f"{what}: {reason}" if what else reason
            log.critical("exiting: %s", message)
            with contextlib.suppress(OSError):  # the kubelet's file, where it mounted one
                TERMINATION_LOG.write_text(f"{message}\n")
            logging.shutdown()
            os._exit(LOAD_FAILURE_EXIT)

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

    @property
    def draining(self) -> bool:
        return self.state is State.DRAINING

    def manifest(self) -> ArtifactManifest:
        """The loaded model's manifest (NotReady before it is loaded)."""
        return self._ready().manifest

    def model_name(self) -> str:
        """The loaded model's name ("" before it is loaded)."""
        transcriber = self.transcriber
        return "" if transcriber is None else transcriber.manifest.name

    def session_decoder(self) -> SessionDecoder:
        """A Realtime session's decoder: the served model and batcher (a live flow of its
        own), its finals windowed and VAD-cropped as files are (NotReady before loading)."""
        transcriber = self._ready()
        return SessionDecoder(
            transcriber.model,
            transcriber.batcher,
            self.config.window_seconds,
            self.config.window_overlap_seconds,
            transcriber.settings.vad,
        )

    def languages(self) -> list[str]:
        """The languages the loaded model speaks (NotReady before it is loaded)."""
        return list(self._ready().manifest.languages)

    def model_card(self) -> dict[str, object]:
        """``GET /v1/models``' entry for the loaded model (NotReady before it is loaded)."""
        model = self._ready().model
        manifest = model.manifest
        return {
            "id": manifest.name,
            "object": "model",
            "created": 0,
            "owned_by": "kubescribe",
            "version": manifest.version,
            "digest": model.artifact.digest,
            "model_file": self.config.model_file,
            "languages": manifest.languages,
            "device": model.device,
            "evaluation": [e.model_dump() for e in manifest.evaluation],
            "quality_gate": self._gate_card(),
        }

    def _gate_card(self) -> dict[str, object]:
        gate = self.gate or GateResult(None, SKIPPED_NO_CLIPS)
        status = "skipped" if gate.passed is None else "passed" if gate.passed else "failed"
        card: dict[str, object] = {"status": status, "message": gate.message}
        if gate.measured is not None:
            card.update(
                measured_wer=round(gate.measured, 4),
                declared_wer=gate.declared,
                tolerance=gate.tolerance,
                clips=gate.clips,
            )
        return card

    def queue_depth(self) -> int:
        """Windows waiting in the batcher (0 before the model is loaded)."""
        transcriber = self.transcriber
        return 0 if transcriber is None else transcriber.batcher.depth

    def stalled_s(self) -> float:
        """How long the inference loop has had work without finishing a batch (0: healthy)."""
        transcriber = self.transcriber
        return 0.0 if transcriber is None else transcriber.batcher.stalled_s()

    @contextlib.contextmanager
    def request(self) -> Iterator[Ticket]:
        """Admit a transcription request before its body is read, and count it in flight.

        Refused with :class:`NotReady` (503) while loading, failed or draining, and with
        :class:`~kubescribe_runtime.admission.Refused` (429) at ``--max-requests``. The ticket
        then admits the audio's length (:meth:`transcribe` / :meth:`stream` do) and is released
        when the request ends.
        """
        with self._idle:
            if self.state is not State.READY:
                draining = self.state is State.DRAINING
                self.metrics.refused.labels("draining" if draining else "not_ready").inc()
                if draining:
                    raise NotReady("the server is shutting down; retry on another replica")
                raise NotReady(f"the model is not ready: {self.reason}")
            try:
                ticket = self.admission.enter()
            except Refused as exc:
                self.metrics.refused.labels(exc.reason).inc()
                raise
            self._in_flight += 1
            self.metrics.in_flight.set(self._in_flight)
        try:
            yield ticket
        finally:
            ticket.close()
            with self._idle:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
                self._idle.notify_all()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Count a realtime session in flight for its lifetime, so that the drain waits for it
        (it finishes its open turn, then closes). Sessions are bounded by ``--max-sessions``,
        not by the request admission; refused with :class:`NotReady` unless ready."""
        with self._idle:
            if self.state is not State.READY:
                draining = self.state is State.DRAINING
                self.metrics.refused.labels("draining" if draining else "not_ready").inc()
                if draining:
                    raise NotReady("the server is shutting down; retry on another replica")
                raise NotReady(f"the model is not ready: {self.reason}")
            self._in_flight += 1
            self.metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)
                self._idle.notify_all()

    def transcribe(
        self,
        data: bytes | IO[bytes],
        ticket: Ticket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Transcript:
        """The whole transcript; ``ticket``: admit the audio's length first (429 if over)."""
        transcriber = self._ready()
        return transcriber.assemble(self.stream(data, ticket, cancelled))

    def transcribe_channels(
        self,
        data: bytes | IO[bytes],
        ticket: Ticket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Transcript:
        """Each channel transcribed on its own, merged by time (``channel_mode=separate``);
        admitted as the audio's length times its channels."""
        transcriber = self._ready()
        info = self._probe(data)
        if ticket is not None:
            self._admit_audio(ticket, info.duration_s * info.channels)
        results = []
        priority = self.priority_of(info.duration_s)
        for channel in range(info.channels):
            progress = transcriber.stream(
                data, cancelled=cancelled, channel=channel, priority=priority
            )
            done = channel * info.duration_s
            if ticket is not None:
                progress = _tracked(progress, ticket, done)
            results.append(transcriber.assemble(progress))
        return merge_channels(results)

    def stream(
        self,
        data: bytes | IO[bytes],
        ticket: Ticket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Generator[Progress, None, None]:
        """The transcript window by window (``stream=true``); the audio is admitted at once,
        the rest is lazy: nothing runs until read."""
        transcriber = self._ready()
        info = self._probe(data)
        if ticket is not None:
            self._admit_audio(ticket, info.duration_s)
        progress = transcriber.stream(
            data, cancelled=cancelled, priority=self.priority_of(info.duration_s)
        )
        return progress if ticket is None else _tracked(progress, ticket)

    def priority_of(self, duration_s: float) -> Priority:
        """A request's class in the batcher: short when its audio fits one window."""
        return Priority.SHORT if duration_s <= self.config.window_seconds else Priority.FILE

    def _ready(self) -> Transcriber:
        transcriber = self.transcriber
        if transcriber is None:
            raise NotReady(f"the model is not ready: {self.reason}")
        return transcriber

    def _probe(self, data: bytes | IO[bytes]) -> audio.AudioInfo:
        return audio.probe(
            data, self.config.max_audio_seconds, self.config.max_audio_seconds_per_mb
        )

    def _admit_audio(self, ticket: Ticket, duration_s: float) -> None:
        """Step 2 of admission: the declared duration (from the header only) joins the backlog."""
        try:
            ticket.admit_audio(duration_s)
        except Refused as exc:
            self.metrics.refused.labels(exc.reason).inc()
            raise


def _tracked(
    progress: Generator[Progress, None, None], ticket: Ticket, done_s: float = 0.0
) -> Generator[Progress, None, None]:
    """``progress``, reporting the audio transcribed so far (after ``done_s`` already done) to
    the admission backlog."""
    try:
        for step in progress:
            ticket.progress(done_s + step.audio_s)
            yield step
    finally:
        progress.close()
