"""Reading a request before any thread is spent on it: the HTTP/1.1 head with a deadline, then
the body at a minimum rate, buffered (in memory, then in a spooled file). Pure: bytes and a
clock in, a verdict out; the server's event loop (:mod:`kubescribe_runtime.server`) feeds it
from non-blocking sockets and hands a request to a worker thread only once it is complete.

So a client that trickles its head or its body costs a socket and a few bytes, never a thread
nor an admission slot; it gets ``408`` when its deadline passes. A probe (``GET /healthz``,
``/readyz``) is answered by the event loop itself as soon as its head is complete: no client,
however slow or however many, stands in front of it.

Anything this module does not understand (a malformed head, framing it cannot follow) is handed
over as it is: the full HTTP parser rejects it in the worker at once, without waiting on the
socket (it fails on the bytes already buffered).
"""

from __future__ import annotations

import enum
import io
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class IntakeLimits:
    """Deadlines and sizes of one request's intake."""

    header_timeout_s: float = 10.0
    # The body must average this rate, measured from the end of the head, after a grace.
    body_min_rate: float = 16 * 1024  # bytes per second
    body_grace_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    memory_bytes: int = 64 * 1024  # of body kept in memory; beyond, spooled to a file
    spool_dir: Path | None = None


class Verdict(enum.Enum):
    MORE = "more"  # keep reading
    READY = "ready"  # hand the request to a worker
    PROBE = "probe"  # answer it here (a liveness or readiness probe)
    REJECT = "reject"  # answer ``rejection`` and close


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str  # the metrics label
    message: str
    code: str  # the error body's code


@dataclass
class Head:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


def parse_head(block: bytes) -> Head | None:
    """The request line and header fields of a head (without its blank line); None when it
    is not a request this module can follow (the worker's parser answers it)."""
    try:
        text = block.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Head(parts[0], parts[1].split("?", 1)[0], headers)


class _Chunked:
    """Follows ``Transfer-Encoding: chunked`` framing to find where the body ends."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._left = 0  # data bytes (and their CRLF) still to skip
        self._trailers = False
        self.done = False
        self.broken = False

    def feed(self, data: bytes) -> None:
        i = 0
        while i < len(data) and not (self.done or self.broken):
            if self._left:
                step = min(self._left, len(data) - i)
                self._left -= step
                i += step
                continue
            end = data.find(b"\n", i)
            if end < 0:
                self._line += data[i:]
                if len(self._line) > 4096:
                    self.broken = True
                return
            self._line += data[i : end + 1]
            i = end + 1
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            if self._trailers:
                self.done = not line
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.broken = True
                return
            if size == 0:
                self._trailers = True
            else:
                self._left = size + 2


@dataclass
class Intake:
    """One request being read. ``feed`` and ``check`` say what to do next."""

    limits: IntakeLimits
    started: float  # when the connection (or its next request) began
    head: Head | None = None
    rejection: Rejection | None = None
    wants_continue: bool = False  # send "100 Continue" now (the client waits for it)
    _buffer: bytearray = field(default_factory=bytearray)
    _head_bytes: bytes = b""
    _body_started: float = 0.0
    _body_length: int | None = None  # None: chunked
    _body_received: int = 0
    _chunked: _Chunked | None = None
    _spool: IO[bytes] | None = None

    def feed(self, data: bytes, now: float) -> Verdict:
        if self.rejection is not None:
            return Verdict.REJECT
        if self.head is None:
            self._buffer += data
            return self._on_head(now)
        return self._on_body(data)

    def check(self, now: float) -> Verdict:
        """The deadlines: REJECT (408) once the head or the body is too late, else MORE."""
        if self.rejection is not None:
            return Verdict.REJECT
        if self.head is None:
            if now - self.started > self.limits.header_timeout_s:
                return self._reject(408, "header_timeout", "the request head took too long")
            return Verdict.MORE
        owed = (now - self._body_started - self.limits.body_grace_s) * self.limits.body_min_rate
        if self._body_received < owed:
            return self._reject(
                408,
                "body_too_slow",
                f"the request body arrived slower than {self.limits.body_min_rate:.0f} bytes/s",
            )
        return Verdict.MORE

    def deadline(self) -> float:
        """When :meth:`check` may next reject, at the earliest (for the loop's wake-up)."""
        if self.head is None:
            return self.started + self.limits.header_timeout_s
        rate = self.limits.body_min_rate
        return self._body_started + self.limits.body_grace_s + (self._body_received + 1) / rate

    @property
    def body_received(self) -> int:
        """Body bytes read so far (held in memory or in the spool file)."""
        return self._body_received

    def request_bytes(self) -> IO[bytes]:
        """The whole request as read (head, then body), for the worker's parser."""
        parts: list[IO[bytes]] = [io.BytesIO(self._head_bytes), io.BytesIO(bytes(self._buffer))]
        if self._spool is not None:
            self._spool.seek(0)
            parts.insert(1, self._spool)
        return io.BufferedReader(_Concat(parts))

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    # -- the head ------------------------------------------------------------------------------

    def _on_head(self, now: float) -> Verdict:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            if len(self._buffer) > self.limits.max_header_bytes:
                return self._reject(431, "header_too_large", "the request head is too large")
            return Verdict.MORE
        block = bytes(self._buffer[:end])
        rest = bytes(self._buffer[end + len(_HEAD_END) :])
        self._buffer.clear()
        head = parse_head(block)
        self._head_bytes = block + _HEAD_END
        if head is None:  # the worker's parser answers it (400)
            self._buffer += rest
            return Verdict.READY
        self.head = head
        if head.method in ("GET", "HEAD") and head.path in PROBE_PATHS:
            return Verdict.PROBE
        self._body_started = now
        if "upgrade" in head.header("connection").lower():
            self._buffer += rest  # a WebSocket: the worker takes the connection over
            return Verdict.READY
        framing = self._framing(head)
        if framing is not None:
            self._buffer += rest
            return framing
        if head.header("expect").lower() == "100-continue" and not rest:
            self.wants_continue = True
            self._head_bytes = _without_expect(block) + _HEAD_END
        return self._on_body(rest)

    def _framing(self, head: Head) -> Verdict | None:
        """How the body is delimited; a verdict when it decides alone (no body, too large, or
        framing the worker's parser must judge)."""
        encoding = head.header("transfer-encoding").lower()
        length = head.header("content-length")
        if encoding:
            if encoding != "chunked" or length:
                return Verdict.READY  # refused by the worker's parser (400 / 501)
            self._chunked = _Chunked()
            return None
        if not length:  # no body (RFC 9112 6.3: a request without framing has none)
            return Verdict.READY
        if not length.isdigit():
            return Verdict.READY  # an invalid Content-Length: 400 from the worker's parser
        self._body_length = int(length)
        if self._body_length > self.limits.max_body_bytes:
            return self._reject(413, "too_large", "the upload is larger than the configured limit")
        return Verdict.READY if self._body_length == 0 else None

    # -- the body ------------------------------------------------------------------------------

    def _on_body(self, data: bytes) -> Verdict:
        self._body_received += len(data)
        self._store(data)
        if self._chunked is not None:
            self._chunked.feed(data)
            if self._body_received > self.limits.max_body_bytes:
                return self._reject(
                    413, "too_large", "the upload is larger than the configured limit"
                )
            if self._chunked.done or self._chunked.broken:
                return Verdict.READY
            return Verdict.MORE
        assert self._body_length is not None
        return Verdict.READY if self._body_received >= self._body_length else Verdict.MORE

    def _store(self, data: bytes) -> None:
        if self._spool is None and len(self._buffer) + len(data) <= self.limits.memory_bytes:
            self._buffer += data
            return
        if self._spool is None:
            directory = None if self.limits.spool_dir is None else str(self.limits.spool_dir)
            self._spool = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed in close()
            self._spool.write(self._buffer)
            self._buffer.clear()
        self._spool.write(data)

    def _reject(self, status: int, reason: str, message: str) -> Verdict:
        code = "file_too_large" if status == 413 else reason  # as the app's own 413
        self.rejection = Rejection(status, reason, message, code)
        self.close()
        return Verdict.REJECT


def _without_expect(block: bytes) -> bytes:
    """The head without its ``Expect`` field: the event loop has answered it already."""
    lines = block.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(b"expect:"))


class _Concat(io.RawIOBase):
    """Several readable streams read as one."""

    def __init__(self, parts: Iterable[IO[bytes]]) -> None:
        self._parts = list(parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._parts:
            data = self._parts[0].read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._parts.pop(0).close()
        return 0

    def close(self) -> None:
        for part in self._parts:
            part.close()
        self._parts.clear()
        super().close()
