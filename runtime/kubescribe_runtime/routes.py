"""Contract 3's HTTP routes, as a Flask blueprint over the serving object: they gather the
request (:mod:`kubescribe_runtime.forms` parses it), call :class:`~.service.Service`, and
render the result; every error is raised and mapped once (:mod:`kubescribe_runtime.errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import select
import socket
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request

from kubescribe_runtime import probes, sse
from kubescribe_runtime.admission import Ticket
from kubescribe_runtime.errors import as_api_error, error_body
from kubescribe_runtime.formats import render
from kubescribe_runtime.forms import TranscriptionForm, parse_transcription_form
from kubescribe_runtime.model_names import ModelNames
from kubescribe_runtime.service import Service
from kubescribe_runtime.transcriber import Progress


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


def _probe_response(answer: tuple[int, dict[str, str]]) -> Response:
    status, body = answer
    response = jsonify(body)
    response.status_code = status
    return response


def blueprint(service: Service, names: ModelNames) -> Blueprint:
    routes = Blueprint("kubescribe", __name__)
    metrics = service.metrics

    @routes.post("/v1/audio/transcriptions")
    def transcriptions() -> Response:
        started = time.monotonic()
        outcome = {"status": 500}

        def record() -> None:
            code = str(outcome["status"])
            metrics.requests.labels(code).inc()
            metrics.latency.labels(code).observe(time.monotonic() - started)

        scope = contextlib.ExitStack()
        try:
            # Admitted (or refused) before the body is parsed.
            ticket = scope.enter_context(service.request())
            response = _transcribe(outcome, ticket)
            outcome["status"] = response.status_code
        except Exception as exc:
            outcome["status"] = as_api_error(exc).status
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
        names.check(request.form.get("model"))  # another model's: 404, as OpenAI answers
        upload = request.files.get("file")
        form = parse_transcription_form(
            request.mimetype, request.form, upload is not None, service.languages
        )
        assert upload is not None  # the form has a file
        # The spooled body itself, not a copy; taken from the request, which closes its files
        # when the view returns, before a streamed response is read.
        data, upload.stream = upload.stream, io.BytesIO()
        gone = _disconnect_probe(request.environ)
        if form.stream:
            response = _stream(service.stream(data, ticket, gone), started, outcome)
            response.call_on_close(data.close)
            return response
        with contextlib.closing(data):
            if form.channel_mode == "separate":
                transcript = service.transcribe_channels(data, ticket, gone)
            else:
                transcript = service.transcribe(data, ticket, gone)
        elapsed = time.monotonic() - started
        metrics.audio_duration.observe(transcript.duration_s)
        if transcript.duration_s > 0:
            metrics.real_time_factor.observe(elapsed / transcript.duration_s)
        return _rendered(transcript, form)

    def _rendered(transcript: Any, form: TranscriptionForm) -> Response:
        if form.language:  # verbose_json reports the language used: the one asked for
            asked = form.language.split("-")[0].lower()
            transcript = dataclasses.replace(transcript, language=asked)
        body, content_type = render(transcript, form.response_format, list(form.granularities))
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

        def event_error(exc: Exception) -> dict[str, Any]:
            outcome["status"] = as_api_error(exc).status
            return error_body(exc)

        events = sse.transcript_events(itertools.chain([first], progress), event_error, observe)
        response = Response(events, status=200, content_type=sse.CONTENT_TYPE, headers=sse.HEADERS)
        # A client that hung up: cancel the windows still queued.
        response.call_on_close(progress.close)
        return response

    @routes.get("/v1/models")
    def models() -> Response:
        """Every model behind the endpoint: this server's names and the catalogue's."""
        return jsonify({"object": "list", "data": names.cards(service.model_card())})

    @routes.get("/v1/models/<path:model>")
    def model(model: str) -> Response:
        return jsonify(names.card(model, service.model_card()))

    @routes.get("/healthz")
    def healthz() -> Response:
        """Served by the server's event loop itself; this route answers the same elsewhere."""
        return _probe_response(probes.healthz(service))

    @routes.get("/readyz")
    def readyz() -> Response:
        return _probe_response(probes.readyz(service))

    @routes.get("/metrics")
    def prometheus() -> Response:
        metrics.queue_depth.set(service.queue_depth())
        return Response(metrics.exposition(), content_type="text/plain; version=0.0.4")

    return routes
