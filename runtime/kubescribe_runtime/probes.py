"""The answers of ``/healthz`` and ``/readyz``, from the serving state alone: the server's event
loop answers probes itself (no worker thread, so no slow or busy client delays them) and the
Flask routes give the same answer (the test client, a direct WSGI call)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # imported by the server's event loop: nothing heavy at import time
    from kubescribe_runtime.service import Service


class _Probed(Protocol):
    def __call__(self, service: Service) -> tuple[int, dict[str, str]]: ...


def healthz(service: Service) -> tuple[int, dict[str, str]]:
    """Alive unless the inference loop is wedged: work has waited longer than
    ``--stall-timeout`` with no batch finishing (the liveness probe restarts the pod)."""
    stalled = service.stalled_s()
    if stalled > service.config.stall_timeout_s:
        reason = f"no batch finished for {stalled:.0f} s while work was waiting"
        return 503, {"status": "stalled", "reason": reason}
    return 200, {"status": "alive"}


def readyz(service: Service) -> tuple[int, dict[str, str]]:
    if service.ready:
        return 200, {"status": "ready"}
    return 503, {"status": service.state.value, "reason": service.reason}


PROBES: dict[str, _Probed] = {"/healthz": healthz, "/readyz": readyz}


def http_response(service: Service | None, path: str, head_only: bool = False) -> bytes:
    """A whole HTTP/1.1 response to a probe (the connection closes after it)."""
    if service is None:  # the worker has not built its app yet
        status, body = 503, {"status": "loading", "reason": "the server is starting"}
    else:
        status, body = PROBES[path](service)
    payload = json.dumps(body).encode() + b"\n"
    return raw_response(status, payload, "application/json", head_only=head_only)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def raw_response(
    status: int,
    payload: bytes,
    content_type: str,
    head_only: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload
