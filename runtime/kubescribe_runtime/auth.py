"""Optional API keys (contract 3): callers send ``Authorization: Bearer <key>``, the header the
OpenAI client sends with its ``api_key``.

Keys come from ``--api-keys`` / ``KUBESCRIBE_API_KEYS`` (comma-separated) and from
``--api-keys-file`` / ``KUBESCRIBE_API_KEYS_FILE``: a file of keys (one a line; blank lines and
``#`` comments skipped), or a directory whose every file holds keys — a mounted Kubernetes
Secret, one key per entry. The file is read again when it changes (the kubelet updates a
mounted Secret in place), so keys rotate without a restart. With neither setting, nothing is
checked (the default).

Every route needs a key except ``/healthz``, ``/readyz`` and ``/metrics`` (the kubelet's probes
and Prometheus). :func:`require_api_key` runs before every request (a WebSocket's upgrade
request too, so a caller without a key is refused before the upgrade). Keys are compared in
constant time (SHA-256 digests with :func:`hmac.compare_digest`, against every key) and are
never logged or echoed: messages name the problem, not the key.

Browsers cannot set headers on a WebSocket: there, as with OpenAI, the key comes as the
sub-protocol ``openai-insecure-api-key.<key>``. Better than a long-lived key in a browser: an
*ephemeral client secret* (``POST /v1/realtime/client_secrets`` with a key, as the OpenAI
client's ``client.realtime.client_secrets.create``): ``ek_<expiry>_<nonce>_<mac>``, the MAC an
HMAC-SHA256 keyed by the digest of the key that asked for it. It opens ``/v1/realtime`` only,
until it expires (10 minutes unless asked otherwise) or its key is removed; no state is kept, so
every replica with the same keys accepts it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from flask import Flask, current_app, g, request

from kubescribe.errors import KubescribeError
from kubescribe_runtime.config import ConfigError, ServeConfig

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
EPHEMERAL_PATHS = frozenset({"/v1/realtime"})  # what a client secret opens
PROTOCOL_KEY_PREFIX = "openai-insecure-api-key."
EPHEMERAL_PREFIX = "ek_"
RECHECK_S = 1.0
_EXTENSION = "kubescribe.api_keys"


class Unauthorized(KubescribeError):
    """No key, or not a valid one: the API answers 401."""

    status = 401
    code = "invalid_api_key"


class MissingKey(Unauthorized):
    code = "missing_api_key"


def parse_keys(text: str) -> set[str]:
    """Keys separated by commas, spaces or lines; ``#`` starts a comment line."""
    keys: set[str] = set()
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        keys.update(k for k in re.split(r"[\s,]+", line) if k)
    return keys


def _files(path: Path) -> list[Path]:
    """The files that hold keys; a Secret volume's ``..data`` entries are skipped."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file())


def _signature(path: Path) -> tuple[tuple[str, int, int, int], ...]:
    stats = []
    for file in _files(path):
        stat = file.stat()
        stats.append((file.name, stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return tuple(stats)


def read_key_file(path: Path) -> set[str]:
    keys: set[str] = set()
    for file in _files(path):
        keys |= parse_keys(file.read_text(encoding="utf-8"))
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The valid keys (as digests), from fixed keys and an optional file re-read on change."""

    def __init__(
        self,
        keys: Iterable[str] = (),
        path: Path | None = None,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fixed = frozenset(_digest(k) for k in keys)
        self._path = path
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._from_file: frozenset[bytes] = frozenset()
        self._signature: object = None
        self._checked = -float("inf")
        if path is not None:
            try:
                self._reload()
            except OSError as exc:
                raise ConfigError(f"cannot read the API keys file {path}: {exc.strerror}") from exc
        if not self._fixed and not self._from_file:
            raise ConfigError("API keys are enabled but no key was given")

    @classmethod
    def from_config(cls, config: ServeConfig) -> ApiKeys | None:
        """None when no key is configured (anyone may call)."""
        fixed = parse_keys(config.api_keys.get_secret_value()) if config.api_keys else set()
        if not fixed and config.api_keys_file is None:
            return None
        return cls(fixed, config.api_keys_file)

    def _reload(self) -> None:
        assert self._path is not None
        signature = _signature(self._path)
        if signature != self._signature:
            keys = read_key_file(self._path)
            self._from_file = frozenset(_digest(k) for k in keys)
            self._signature = signature
            log.info("API keys loaded from %s: %d key(s)", self._path, len(keys))
            if not keys and not self._fixed:
                log.error("the API keys file %s holds no key: every call is refused", self._path)

    def _current(self) -> frozenset[bytes]:
        if self._path is None:
            return self._fixed
        with self._lock:
            now = self._clock()
            if now - self._checked >= self._recheck_s:
                self._checked = now
                try:
                    self._reload()
                except OSError as exc:  # fail closed until the file is back
                    log.error("cannot read the API keys file %s: %s", self._path, exc.strerror)
                    self._from_file = frozenset()
                    self._signature = None
            return self._fixed | self._from_file

    def valid(self, key: str) -> bool:
        presented = _digest(key)
        found = False
        for digest in self._current():  # no early exit: the time does not depend on the match
            found |= hmac.compare_digest(presented, digest)
        return found

    def valid_client_secret(self, secret: str, now: float) -> bool:
        """An unexpired client secret minted with one of the current keys."""
        try:
            expires, nonce, mac = secret.removeprefix(EPHEMERAL_PREFIX).split("_")
            if int(expires) < now:
                return False
        except ValueError:
            return False
        found = False
        for digest in self._current():
            found |= hmac.compare_digest(mac, _mac(digest, expires, nonce))
        return found

    def check(
        self, authorization: str | None, protocols: str | None = None, ephemeral: bool = False
    ) -> str:
        """The key presented (``Authorization: Bearer <key>``, or on a WebSocket the
        sub-protocol ``openai-insecure-api-key.<key>``); :class:`Unauthorized` unless it is
        valid (a client secret only where ``ephemeral``)."""
        key = _protocol_key(protocols) if not authorization else None
        if key is None:
            if not authorization:
                raise MissingKey(
                    "missing API key: send the header 'Authorization: Bearer <key>' "
                    "(the OpenAI client's api_key)"
                )
            scheme, _, key = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <key>'")
            key = key.strip()
        if key.startswith(EPHEMERAL_PREFIX):
            if not ephemeral:
                raise Unauthorized("a client secret opens realtime sessions only")
            if not self.valid_client_secret(key, time.time()):
                raise Unauthorized("invalid or expired client secret")
        elif not self.valid(key):
            raise Unauthorized("invalid API key")
        return key


def _mac(digest: bytes, expires: str, nonce: str) -> str:
    return hmac.new(digest, f"{expires}.{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def _protocol_key(protocols: str | None) -> str | None:
    for protocol in (protocols or "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(PROTOCOL_KEY_PREFIX):
            return protocol.removeprefix(PROTOCOL_KEY_PREFIX) or None
    return None


_UNKEYED = secrets.token_bytes(32)  # signs client secrets where no key is configured


def mint_client_secret(key: str | None, ttl_s: int, now: float) -> tuple[str, int]:
    """A client secret for the caller that presented ``key`` (None: keys are off), and when it
    expires (Unix seconds)."""
    expires = str(int(now) + ttl_s)
    nonce = secrets.token_hex(8)
    digest = _digest(key) if key is not None else _UNKEYED
    return f"{EPHEMERAL_PREFIX}{expires}_{nonce}_{_mac(digest, expires, nonce)}", int(expires)


def presented_key() -> str | None:
    """The long-lived key the current request was let in with (None: keys are off)."""
    key: str | None = g.get("api_key")
    return key


def install(app: Flask, keys: ApiKeys | None) -> None:
    """Check every request of ``app`` against ``keys`` (None: no check)."""
    app.extensions[_EXTENSION] = keys
    app.before_request(require_api_key)


def require_api_key() -> None:
    """Refuse the current request (raise :class:`Unauthorized`, answered 401) unless keys are
    off, the path is a probe or metrics, or it carries a valid key. Installed before every
    route by :func:`install`; a route (the WebSocket upgrade) may call it again, harmlessly."""
    keys: ApiKeys | None = current_app.extensions.get(_EXTENSION)
    if keys is None or request.path in OPEN_PATHS:
        return
    key = keys.check(
        request.headers.get("Authorization"),
        request.headers.get("Sec-WebSocket-Protocol"),
        ephemeral=request.path in EPHEMERAL_PATHS,
    )
    g.api_key = None if key.startswith(EPHEMERAL_PREFIX) else key
