"""`kubescribe fetch`: every source, verification before install, digest-keyed reuse."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from kubescribe_runtime.artifact import load_artifact
from kubescribe_runtime.cli import fetch_main
from kubescribe_runtime.fetch import FetchError, fetch, file_url, redact
from kubescribe_runtime.manifest import MANIFEST_NAME, sha256_file
from moto.server import ThreadedMotoServer
from rt_fixtures import TONE_TOKENS, write_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_artifact(tmp_path_factory.mktemp("src") / "tone-1", TONE_TOKENS)


def _digest(directory: Path) -> str:
    return sha256_file(directory / MANIFEST_NAME)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https_server(
    tmp_path_factory: pytest.TempPathFactory, artifact: Path
) -> Iterator[tuple[str, list[str]]]:
    """A real TLS server (self-signed for 127.0.0.1) serving the artifact's parent directory."""
    certs = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    requested: list[str] = []

    class Recording(_Handler):
        def do_GET(self) -> None:
            requested.append(self.path)
            token = self.headers.get("Authorization")
            if token:
                requested.append(token)
            super().do_GET()

    handler = functools.partial(Recording, directory=str(artifact.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "cert.pem", certs / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(certs / "cert.pem")
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/{artifact.name}", requested
    finally:
        if old is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old
        server.shutdown()


@pytest.fixture(scope="module")
def s3(artifact: Path) -> Iterator[dict[str, str]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="models")
    for path in artifact.iterdir():
        client.upload_file(str(path), "models", f"speech/tone/1.0.0/{path.name}")
    client.put_object(
        Bucket="models", Key="broken/kubescribe.yaml", Body=(artifact / MANIFEST_NAME).read_bytes()
    )
    client.put_object(Bucket="models", Key="broken/model.onnx", Body=b"not the model")
    for name in ("tokens.txt", "config.json"):
        client.upload_file(str(artifact / name), "models", f"broken/{name}")
    try:
        yield env
    finally:
        server.stop()


def _assert_installed(dest: Path, artifact: Path) -> None:
    loaded = load_artifact(dest)
    assert loaded.digest == _digest(artifact)
    assert not [p for p in dest.iterdir() if p.name.startswith(".kubescribe-staging")]


@pytest.mark.parametrize("form", ["bare", "file", "pvc"])
def test_local_sources(tmp_path: Path, artifact: Path, form: str) -> None:
    pvc_root = tmp_path / "pvc"
    if form == "pvc":
        shutil.copytree(artifact, pvc_root / "models-claim" / "tone" / "1")
    uri = {
        "bare": str(artifact),
        "file": artifact.as_uri(),
        "pvc": "pvc://models-claim/tone/1",
    }[form]
    result = fetch(uri, tmp_path / "dest", pvc_root=pvc_root, environ={})
    assert result.how == "fetched"
    _assert_installed(tmp_path / "dest", artifact)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pvc://claim/../../etc", "escapes the claim"),
        ("pvc://claim/../other-claim/model", "escapes the claim"),
        ("pvc://claim/%2e%2e/other-claim", "escapes the claim"),
        ("pvc://claim/link-out", "escapes the claim"),  # a symbolic link to another claim
        ("pvc://../etc", "not a PersistentVolumeClaim name"),
        ("pvc://Claim_1/model", "not a PersistentVolumeClaim name"),
    ],
)
def test_pvc_path_cannot_escape_the_claim(tmp_path: Path, uri: str, message: str) -> None:
    (tmp_path / "other-claim" / "model").mkdir(parents=True)
    (tmp_path / "claim").mkdir()
    (tmp_path / "claim" / "link-out").symlink_to(tmp_path / "other-claim" / "model")
    with pytest.raises(FetchError, match=message):
        fetch(uri, tmp_path / "dest", pvc_root=tmp_path, environ={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://host/models/demo", "https://host/models/demo"),
        ("https://host/models/demo/?sv=2024&sig=SECRET", "https://host/models/demo/?…"),
        ("https://user:SECRET@host:8443/m#frag", "https://host:8443/m"),
    ],
)
def test_urls_are_redacted_for_logs(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://host/models/demo", "https://host/models/demo/model.onnx"),
        ("https://host/models/demo/", "https://host/models/demo/model.onnx"),
        ("https://host/demo?sv=1&sig=a%2Fb", "https://host/demo/model.onnx?sv=1&sig=a%2Fb"),
    ],
)
def test_file_names_go_into_the_path_and_the_query_is_kept(base: str, expected: str) -> None:
    assert file_url(base, "model.onnx") == expected


def test_presigned_https_url_works_and_its_signature_stays_out_of_logs(
    tmp_path: Path,
    artifact: Path,
    https_server: tuple[str, list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, requested = https_server
    requested.clear()
    caplog.set_level(logging.DEBUG)
    result = fetch(url + "?sv=2024&sig=SECRET", tmp_path / "dest", environ={})
    assert result.how == "fetched"
    _assert_installed(tmp_path / "dest", artifact)
    assert sorted(requested) == sorted(
        f"/{artifact.name}/{n}?sv=2024&sig=SECRET" for n in os.listdir(artifact)
    )
    assert "fetching" in caplog.text and "SECRET" not in caplog.text


@pytest.mark.parametrize("suffix", ["-nope", ":1"], ids=["404", "connection refused"])
def test_fetch_errors_do_not_quote_the_signature(
    tmp_path: Path, https_server: tuple[str, list[str]], suffix: str
) -> None:
    url, _ = https_server
    if suffix == ":1":  # nothing listens on port 1
        url = "https://127.0.0.1:1/artifact"
    else:
        url += suffix
    with pytest.raises(FetchError) as caught:
        fetch(url + "?sig=SECRET", tmp_path / "dest", environ={})
    assert "SECRET" not in str(caught.value)


def test_the_bearer_token_is_never_sent_over_plain_http(tmp_path: Path) -> None:
    requested: list[str] = []

    class Recording(_Handler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/artifact"
        with pytest.raises(FetchError, match="refusing to send the bearer token"):
            fetch(url, tmp_path / "dest", environ={"KUBESCRIBE_HTTP_BEARER_TOKEN": "s3cr3t"})
    finally:
        server.shutdown()
        server.server_close()
    assert requested == []


def test_https_fetch_then_reuse(
    tmp_path: Path, artifact: Path, https_server: tuple[str, list[str]]
) -> None:
    url, requested = https_server
    requested.clear()
    first = fetch(url, tmp_path / "dest", environ={})
    assert first.how == "fetched"
    _assert_installed(tmp_path / "dest", artifact)
    assert sorted(requested) == sorted(f"/{artifact.name}/{n}" for n in os.listdir(artifact))
    # Same digest already in DEST: only the manifest is read again.
    requested.clear()
    assert fetch(url, tmp_path / "dest", environ={}).how == "present"
    assert requested == [f"/{artifact.name}/{MANIFEST_NAME}"]
    # With the digest pinned, nothing at all is requested.
    requested.clear()
    assert fetch(url, tmp_path / "dest", sha256=_digest(artifact), environ={}).how == "present"
    assert requested == []


def test_https_bearer_token(
    tmp_path: Path, artifact: Path, https_server: tuple[str, list[str]]
) -> None:
    url, requested = https_server
    requested.clear()
    fetch(url, tmp_path / "dest", environ={"KUBESCRIBE_HTTP_BEARER_TOKEN": "s3cr3t"})
    assert requested.count("Bearer s3cr3t") == len(os.listdir(artifact))


def test_https_missing_artifact(tmp_path: Path, https_server: tuple[str, list[str]]) -> None:
    url, _ = https_server
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(url + "-nope", tmp_path / "dest", environ={})


def test_s3_fetch_through_the_cache(tmp_path: Path, artifact: Path, s3: dict[str, str]) -> None:
    cache = tmp_path / "cache"
    first = fetch("s3://models/speech/tone/1.0.0", tmp_path / "pod-1", cache_dir=cache, environ=s3)
    assert first.how == "fetched"
    _assert_installed(tmp_path / "pod-1", artifact)
    assert load_artifact(cache / first.digest).digest == first.digest
    # A scale-up with the digest pinned takes the cached copy: the endpoint is not even needed.
    offline = {**s3, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    second = fetch(
        "s3://models/speech/tone/1.0.0",
        tmp_path / "pod-2",
        sha256=first.digest,
        cache_dir=cache,
        environ=offline,
    )
    assert second.how == "cache"
    _assert_installed(tmp_path / "pod-2", artifact)


def test_s3_corrupted_file_is_refused_and_nothing_installed(
    tmp_path: Path, s3: dict[str, str]
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=r"model\.onnx: sha256 mismatch"):
        fetch("s3://models/broken", dest, environ=s3)
    assert not (dest / MANIFEST_NAME).exists()
    assert not (dest / "model.onnx").exists()


def test_s3_missing_key(tmp_path: Path, s3: dict[str, str]) -> None:
    with pytest.raises(FetchError, match=r"s3://models/absent/kubescribe\.yaml"):
        fetch("s3://models/absent", tmp_path / "dest", environ=s3)


def test_pinned_digest_mismatch(tmp_path: Path, artifact: Path) -> None:
    with pytest.raises(FetchError, match="does not match the expected"):
        fetch(str(artifact), tmp_path / "dest", sha256="0" * 64, environ={})
    assert not (tmp_path / "dest" / MANIFEST_NAME).exists()


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported scheme 'ftp'"):
        fetch("ftp://host/x", tmp_path / "dest", environ={})


def test_fetch_cli(tmp_path: Path, artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_main([artifact.as_uri(), str(tmp_path / "dest")]) == 0
    assert capsys.readouterr().out.startswith("fetched: ")
    _assert_installed(tmp_path / "dest", artifact)
