"""Contract 3: the Flask routes. They only gather the request and apply the pipeline's result;
every error is mapped to OpenAI-style JSON once, in :func:`_error_response`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import logging
import select
import socket
import tempfile
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import IO, Any

from flask import Flask, Request, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from kubescribe_runtime import auth, probes, sse
from kubescribe_runtime.admission import Refused, Ticket
from kubescribe_runtime.audio import AudioError
from kubescribe_runtime.batcher import BatcherClosed
from kubescribe_runtime.channels import CHANNEL_MODES
from kubescribe_runtime.formats import GRANULARITIES, RESPONSE_FORMATS, render
from kubescribe_runtime.realtime import edge as realtime
from kubescribe_runtime.service import NotReady, Service
from kubescribe_runtime.transcriber import ClientGone, Progress, RequestTimeout

log = logging.getLogger(__name__)

STREAM_FORMATS = ("json", "text")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_
        self.headers = headers or {}
        self.param = param


class _SpoolingRequest(Request):
    """An upload is held once: in memory up to ``spool_threshold`` bytes, beyond that in an
    unlinked file in ``scratch_dir`` (bounded by MAX_CONTENT_LENGTH either way). The decoder
    reads that file; nothing copies the body again."""

    spool_threshold = 1024 * 1024
    scratch_dir: Path | None = None

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        directory = None if self.scratch_dir is None else str(self.scratch_dir)
        return tempfile.SpooledTemporaryFile(max_size=self.spool_threshold, dir=directory)


def _disconnect_probe(environ: Mapping[str, Any]) -> Callable[[], bool]:
    """``gone()``: True once the client closed its connection (after its whole request was
    read, an HTTP client sends nothing more but a next request, so end-of-stream means gone).
    Without the server's socket (the test client), never."""
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return lambda: False

    def gone() -> bool:
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(0):
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return gone


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, auth.Unauthorized):
        return ApiError(
            401,
            str(exc),
            exc.code,
            headers={"WWW-Authenticate": 'Bearer realm="kubescribe"'},
        )
    if isinstance(exc, AudioError):
        return ApiError(exc.status, str(exc), exc.code, param="file")
    if isinstance(exc, Refused):
        return ApiError(
            429,
            str(exc),
            "too_many_requests" if exc.reason == "requests" else "backlog_full",
            "rate_limit_error",
            {"Retry-After": str(exc.retry_after_s)},
        )
    if isinstance(exc, ClientGone):  # nobody reads the answer; logged as nginx's 499
        return ApiError(499, str(exc), "client_closed_request", "server_error")
    if isinstance(exc, BatcherClosed | NotReady):
        return ApiError(503, str(exc), "not_ready", "server_error", {"Retry-After": "5"})
    if isinstance(exc, RequestTimeout):
        return ApiError(504, str(exc), "timeout", "server_error")
    if isinstance(exc, RequestEntityTooLarge):
        return ApiError(413, "the upload is larger than the configured limit", "file_too_large")
    if isinstance(exc, HTTPException):
        code = exc.code or 500
        return ApiError(code, exc.description or exc.name, exc.name.lower().replace(" ", "_"))
    return ApiError(500, f"internal error: {type(exc).__name__}", "internal_error", "server_error")


def _error_body(exc: Exception) -> dict[str, Any]:
    error = _as_api_error(exc)
    if error.status == 500:
        log.error("unexpected error", exc_info=exc)
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def _error_response(exc: Exception) -> Response:
    error = _as_api_error(exc)
    response = jsonify(_error_body(exc))
    response.status_code = error.status
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


def _form_choice(name: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.form.get(name, default) or default
    if value not in allowed:
        raise ApiError(
            400,
            f"unknown {name} {value!r}; expected one of {', '.join(allowed)}",
            f"invalid_{name}",
            param=name,
        )
    return value


def _form_temperature() -> float:
    """OpenAI's sampling temperature, 0 to 1; greedy CTC decoding does not sample, but a value
    the OpenAI API refuses is refused here too."""
    raw = (request.form.get("temperature") or "0").strip()
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ApiError(
            400,
            f"temperature must be a number from 0 to 1, got {raw!r}",
            "invalid_temperature",
            param="temperature",
        )
    return value


def _form_flag(name: str) -> bool:
    value = (request.form.get(name) or "false").strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(
            400, f"{name} must be true or false, got {value!r}", f"invalid_{name}", param=name
        )
    return value in ("true", "1")


def _probe_response(answer: tuple[int, dict[str, str]]) -> Response:
    status, body = answer
    response = jsonify(body)
    response.status_code = status
    return response


def create_app(service: Service) -> Flask:
    app = Flask("kubescribe_runtime")
    app.request_class = type(
        "Request",
        (_SpoolingRequest,),
        {
            "spool_threshold": service.config.spool_threshold_bytes,
            "scratch_dir": service.config.scratch_dir,
        },
    )
    app.config["MAX_CONTENT_LENGTH"] = service.config.max_upload_bytes
    metrics = service.metrics

    app.register_error_handler(Exception, _error_response)
    auth.install(app, auth.ApiKeys.from_config(service.config))

    @app.post("/v1/audio/transcriptions")
    def transcriptions() -> Response:
        started = time.monotonic()
        outcome = {"status": 500}

        def record() -> None:
            code = str(outcome["status"])
            metrics.requests.labels(code).inc()
            metrics.latency.labels(code).observe(time.monotonic() - started)

        scope = contextlib.ExitStack()
        try:
            # Admitted (or refused) before the body is read.
            ticket = scope.enter_context(service.request())
            response = _transcribe(outcome, ticket)
            outcome["status"] = response.status_code
        except Exception as exc:
            outcome["status"] = _as_api_error(exc).status
            scope.close()
            record()
            raise
        if response.is_streamed:
            # In flight until the last event is written (or the client hangs up): the WSGI
            # server closes the response then.
            response.call_on_close(scope.close)
            response.call_on_close(record)
        else:
            scope.close()
            record()
        return response

    def _transcribe(outcome: dict[str, int], ticket: Ticket) -> Response:
        started = time.monotonic()
        mimetype = request.mimetype
        if mimetype != "multipart/form-data":
            raise ApiError(
                415,
                f"expected a multipart/form-data upload, got {mimetype or 'no content type'!r}",
                "unsupported_content_type",
            )
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "missing the 'file' field (the audio)", "missing_file", "file")
        response_format = _form_choice("response_format", RESPONSE_FORMATS, "json")
        _form_temperature()
        stream = _form_flag("stream")
        # kubescribe's extension: "separate" transcribes each channel on its own.
        channel_mode = _form_choice("channel_mode", CHANNEL_MODES, "mix")
        if stream and channel_mode != "mix":
            raise ApiError(
                400,
                "channel_mode=separate answers once, with every channel: not with stream=true",
                "invalid_channel_mode",
                param="channel_mode",
            )
        if stream and response_format not in STREAM_FORMATS:
            raise ApiError(
                400,
                "stream=true answers server-sent events; response_format must be json or text",
                "invalid_response_format",
                param="response_format",
            )
        granularities = request.form.getlist("timestamp_granularities[]")
        granularities += request.form.getlist("timestamp_granularities")
        unknown = sorted(set(granularities) - set(GRANULARITIES))
        if unknown:
            raise ApiError(
                400,
                f"unknown timestamp_granularities {unknown}; expected segment or word",
                "invalid_timestamp_granularities",
                param="timestamp_granularities[]",
            )
        if granularities and response_format != "verbose_json":
            raise ApiError(
                400,
                "timestamp_granularities needs response_format=verbose_json",
                "invalid_timestamp_granularities",
                param="timestamp_granularities[]",
            )
        language = request.form.get("language") or ""
        if service.transcriber is None:
            raise NotReady(f"the model is not ready: {service.reason}")
        languages = service.transcriber.manifest.languages
        if language and language.split("-")[0].lower() not in languages:
            raise ApiError(
                400,
                f"language {language!r} is not served; this model speaks {', '.join(languages)}",
                "unsupported_language",
                param="language",
            )
        # The spooled body itself, not a copy; taken from the request, which closes its files
        # when the view returns, before a streamed response is read.
        data, upload.stream = upload.stream, io.BytesIO()
        gone = _disconnect_probe(request.environ)
        if stream:
            response = _stream(service.stream(data, ticket, gone), started, outcome)
            response.call_on_close(data.close)
            return response
        with contextlib.closing(data):
            if channel_mode == "separate":
                transcript = service.transcribe_channels(data, ticket, gone)
            else:
                transcript = service.transcribe(data, ticket, gone)
        elapsed = time.monotonic() - started
        metrics.audio_duration.observe(transcript.duration_s)
        if transcript.duration_s > 0:
            metrics.real_time_factor.observe(elapsed / transcript.duration_s)
        if language:  # verbose_json reports the language used: the one asked for
            transcript = dataclasses.replace(transcript, language=language.split("-")[0].lower())
        body, content_type = render(transcript, response_format, granularities)
        return Response(body, status=200, content_type=content_type)

    def _stream(
        progress: Generator[Progress, None, None], started: float, outcome: dict[str, int]
    ) -> Response:
        # The first window is decoded before the response starts, so that audio the server
        # cannot read is still a plain HTTP error; anything later is an ``error`` event.
        first = next(progress)

        def observe(audio_s: float) -> None:
            metrics.audio_duration.observe(audio_s)
            if audio_s > 0:
                metrics.real_time_factor.observe((time.monotonic() - started) / audio_s)

        def error_body(exc: Exception) -> dict[str, Any]:
            outcome["status"] = _as_api_error(exc).status
            return _error_body(exc)

        events = sse.transcript_events(itertools.chain([first], progress), error_body, observe)
        response = Response(events, status=200, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)
        # A client that hung up: cancel the windows still queued.
        response.call_on_close(progress.close)
        return response

    @app.get("/v1/models")
    def models() -> Response:
        transcriber = service.transcriber
        if transcriber is None:
            raise NotReady(f"the model is not ready: {service.reason}")
        model = transcriber.model
        manifest = model.manifest
        entry = {
            "id": manifest.name,
            "object": "model",
            "created": 0,
            "owned_by": "kubescribe",
            "version": manifest.version,
            "digest": model.artifact.digest,
            "model_file": service.config.model_file,
            "languages": manifest.languages,
            "device": model.device,
            "evaluation": [e.model_dump() for e in manifest.evaluation],
        }
        return jsonify({"object": "list", "data": [entry]})

    @app.get("/healthz")
    def healthz() -> Response:
        """Served by the server's event loop itself; this route answers the same elsewhere."""
        return _probe_response(probes.healthz(service))

    @app.get("/readyz")
    def readyz() -> Response:
        return _probe_response(probes.readyz(service))

    @app.get("/metrics")
    def prometheus() -> Response:
        if service.transcriber is not None:
            metrics.queue_depth.set(service.transcriber.batcher.depth)
        return Response(metrics.exposition(), content_type="text/plain; version=0.0.4")

    realtime.register(app, service)  # /v1/realtime: WebSocket transcription sessions
    return app
