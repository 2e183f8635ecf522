"""`kubescribe fetch URI DEST`: get an artifact, verify it, install it atomically, cache it.

Sources: a bare path or ``file://`` (inside the image or a mounted volume), ``pvc://claim/path``
(under the PVC mount root), ``https://`` (and ``http://``), ``s3://bucket/prefix`` (any
S3-compatible endpoint: the standard ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included).

Every file is downloaded into a staging directory next to its destination, checked against the
manifest's sha256, and only then renamed into place, ``kubescribe.yaml`` last: a destination
never holds a half-written artifact under a valid manifest. With a cache directory, artifacts
live under ``<cache>/<digest>/`` (the digest is the sha256 of ``kubescribe.yaml``) and a hit is
hard-linked (or copied) instead of fetched again.

Credentials stay out of logs and errors: a URL is shown without its query string (presigned and
SAS URLs carry their signature there) and without user information. A base URL's query is kept
on every file's URL (file names go into the path), so a token scoped to a prefix (an Azure SAS,
a signed prefix) works. The bearer token is only ever sent over https. A ``pvc://`` path is
resolved (symbolic links included) and must stay inside its claim.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import requests

from kubescribe.errors import KubescribeError
from kubescribe_runtime.artifact import ArtifactError, verify_files
from kubescribe_runtime.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_HTTP_TIMEOUT = (10, 120)


# A PersistentVolumeClaim's name (RFC 1123 subdomain).
_CLAIM = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class FetchError(KubescribeError):
    """The artifact could not be fetched or did not verify."""


def redact(url: str) -> str:
    """``url`` fit for a log line: no user information, no query string, no fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def file_url(base_url: str, name: str) -> str:
    """The URL of artifact file ``name`` under ``base_url``: into the path, the query kept."""
    parts = urllib.parse.urlsplit(base_url)
    path = parts.path.rstrip("/") + "/" + urllib.parse.quote(name)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _scrub(text: str) -> str:
    """An exception's text without the query strings of the URLs it quotes."""
    return re.sub(r"\?[^\s'\"()]*", "?…", text)


class _ScrubQueries(logging.Filter):
    """urllib3 logs every request line (with its query) at debug level: scrub it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = _scrub(record.getMessage()), ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_ScrubQueries())


class Source(Protocol):
    @property
    def description(self) -> str: ...

    def get(self, name: str, target: Path) -> None:
        """Write the artifact file ``name`` to ``target``."""


@dataclass
class LocalSource:
    root: Path

    @property
    def description(self) -> str:
        return str(self.root)

    def get(self, name: str, target: Path) -> None:
        path = self.root / name
        if not path.is_file():
            raise FetchError(f"{path}: not found")
        shutil.copyfile(path, target)


@dataclass
class HttpSource:
    base_url: str
    token: str | None = None

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.base_url).scheme.lower()
        if self.token and scheme != "https":
            raise FetchError(
                f"{redact(self.base_url)}: refusing to send the bearer token over plain "
                f"{scheme}://; use https"
            )

    @property
    def description(self) -> str:
        return redact(self.base_url)

    def get(self, name: str, target: Path) -> None:
        url = file_url(self.base_url, name)
        shown = redact(url)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            with requests.get(url, headers=headers, stream=True, timeout=_HTTP_TIMEOUT) as resp:
                if resp.status_code != 200:
                    raise FetchError(f"{shown}: HTTP {resp.status_code} {resp.reason}")
                if self.token and not resp.url.lower().startswith("https://"):
                    raise FetchError(f"{shown}: redirected to plain http; token withheld")
                with target.open("wb") as handle:
                    for chunk in resp.iter_content(_CHUNK):
                        handle.write(chunk)
        except requests.RequestException as exc:
            raise FetchError(f"{shown}: {type(exc).__name__}: {_scrub(str(exc))}") from exc


@dataclass
class S3Source:
    bucket: str
    prefix: str
    client: Any

    @property
    def description(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def get(self, name: str, target: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix.rstrip('/')}/{name}" if self.prefix else name
        try:
            self.client.download_file(self.bucket, key, str(target))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "error")
            message = error.get("Message", "")
            raise FetchError(f"s3://{self.bucket}/{key}: {code} {message}") from exc
        except BotoCoreError as exc:
            raise FetchError(f"s3://{self.bucket}/{key}: {exc}") from exc


def _s3_client(environ: Mapping[str, str]) -> Any:
    import boto3

    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Explicit credentials from `environ` when given there; otherwise boto3's default chain
    # (environment, web identity, instance profile).
    session = boto3.session.Session(
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint)


def source_for(uri: str, pvc_root: Path, environ: Mapping[str, str] | None = None) -> Source:
    env = os.environ if environ is None else environ
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        return LocalSource(Path(uri))
    if scheme == "file":
        return LocalSource(Path(urllib.parse.unquote(parsed.path)))
    if scheme == "pvc":
        claim, path = parsed.netloc, urllib.parse.unquote(parsed.path).lstrip("/")
        if not claim:
            raise FetchError(f"{uri}: expected pvc://CLAIM/PATH")
        if not _CLAIM.fullmatch(claim):
            raise FetchError(f"{uri}: {claim!r} is not a PersistentVolumeClaim name")
        root = (pvc_root / claim / path).resolve()
        if not root.is_relative_to((pvc_root / claim).resolve()):
            raise FetchError(f"{uri}: the path escapes the claim")
        return LocalSource(root)
    if scheme in ("http", "https"):
        return HttpSource(uri, env.get("KUBESCRIBE_HTTP_BEARER_TOKEN") or None)
    if scheme == "s3":
        if not parsed.netloc:
            raise FetchError(f"{uri}: expected s3://BUCKET/PREFIX")
        return S3Source(parsed.netloc, parsed.path.lstrip("/"), _s3_client(env))
    raise FetchError(f"{redact(uri)}: unsupported scheme {scheme!r} (file, pvc, https, s3)")


@dataclass(frozen=True)
class FetchResult:
    dest: Path
    digest: str
    how: str  # "fetched", "cache" (linked from the cache), "present" (already in DEST)


def _holds(directory: Path, digest: str) -> bool:
    """``directory`` holds the complete, verified artifact with this manifest digest."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file() or sha256_file(manifest_path) != digest:
        return False
    try:
        verify_files(directory, ArtifactManifest.load(directory))
    except (ArtifactError, KubescribeError) as exc:
        log.warning("%s: present but not intact (%s): fetching again", directory, exc)
        return False
    return True


def _publish(staging: Path, final: Path, manifest: ArtifactManifest) -> None:
    """Rename verified files from ``staging`` into ``final``, the manifest last."""
    for name in sorted(manifest.files):
        target = final / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
    os.replace(staging / MANIFEST_NAME, final / MANIFEST_NAME)


@contextlib.contextmanager
def _staging(final: Path) -> Any:
    final.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".kubescribe-staging-", dir=final))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _install_from(directory: Path, manifest: ArtifactManifest, final: Path) -> None:
    with _staging(final) as staging:
        for name in [*manifest.files, MANIFEST_NAME]:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(directory / name, staging / name)
        verify_files(staging, manifest)
        _publish(staging, final, manifest)


def _download(source: Source, staging: Path, manifest: ArtifactManifest) -> None:
    for name, expected in sorted(manifest.files.items()):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise FetchError(f"{MANIFEST_NAME}: file name {name!r} escapes the artifact")
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s from %s", name, source.description)
        source.get(name, target)
        actual = sha256_file(target)
        if actual != expected:
            raise FetchError(
                f"{source.description}: {name}: sha256 mismatch "
                f"(manifest {expected[:12]}…, downloaded {actual[:12]}…)"
            )


def fetch(
    uri: str,
    dest: Path,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    pvc_root: Path = Path("/mnt/pvc"),
    environ: Mapping[str, str] | None = None,
) -> FetchResult:
    """Fetch the artifact at ``uri`` into ``dest``, verified; reuse what is already there."""
    # 1. With the digest known up front, a hit needs no network at all.
    if sha256:
        if _holds(dest, sha256):
            return FetchResult(dest, sha256, "present")
        if cache_dir is not None and _holds(cache_dir / sha256, sha256):
            _install_from(cache_dir / sha256, ArtifactManifest.load(cache_dir / sha256), dest)
            return FetchResult(dest, sha256, "cache")
    source = source_for(uri, pvc_root, environ)
    with _staging(dest) as staging:
        # 2. The manifest first: it names the digest and every file.
        source.get(MANIFEST_NAME, staging / MANIFEST_NAME)
        digest = sha256_file(staging / MANIFEST_NAME)
        if sha256 and digest != sha256:
            raise FetchError(
                f"{source.description}/{MANIFEST_NAME}: sha256 {digest} does not match the "
                f"expected {sha256}"
            )
        manifest = ArtifactManifest.load(staging)
        if _holds(dest, digest):
            return FetchResult(dest, digest, "present")
        if cache_dir is not None and _holds(cache_dir / digest, digest):
            _install_from(cache_dir / digest, manifest, dest)
            return FetchResult(dest, digest, "cache")
        # 3. Everything else, verified file by file, then published.
        _download(source, staging, manifest)
        if cache_dir is None:
            _publish(staging, dest, manifest)
            return FetchResult(dest, digest, "fetched")
        entry = cache_dir / digest
        entry.mkdir(parents=True, exist_ok=True)
        with _staging(entry) as cache_staging:
            for name in [*manifest.files, MANIFEST_NAME]:
                (cache_staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(staging / name, cache_staging / name)  # may cross file systems
            _publish(cache_staging, entry, manifest)
    _install_from(entry, manifest, dest)
    return FetchResult(dest, digest, "fetched")
