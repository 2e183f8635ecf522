"""Errors as clients see them, once for every edge (HTTP routes, SSE, the Realtime WebSocket):
a specific exception maps to a status, an OpenAI error ``type`` and a ``code`` here, and
nowhere else. Bodies are OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from kubescribe_runtime import auth
from kubescribe_runtime.admission import Refused
from kubescribe_runtime.audio import AudioError
from kubescribe_runtime.batcher import BatcherClosed
from kubescribe_runtime.service import NotReady
from kubescribe_runtime.transcriber import ClientGone, RequestTimeout

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, already decided: status, message, code, type."""

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


def as_api_error(exc: Exception) -> ApiError:
    """The client's view of any exception (500 ``internal_error`` for the unexpected)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, auth.Unauthorized):
        return ApiError(
            401, str(exc), exc.code, headers={"WWW-Authenticate": 'Bearer realm="kubescribe"'}
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


def error_body(exc: Exception) -> dict[str, Any]:
    """The JSON body (also an SSE ``error`` event's); an unexpected error is logged here."""
    error = as_api_error(exc)
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


def error_response(exc: Exception) -> Response:
    """The Flask response: the body, the status and the error's headers (Retry-After, …)."""
    error = as_api_error(exc)
    response = jsonify(error_body(exc))
    response.status_code = error.status
    for key, value in error.headers.items():
        response.headers[key] = value
    return response
