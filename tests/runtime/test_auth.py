"""Optional API keys: ``Authorization: Bearer <key>`` on HTTP and on the WebSocket upgrade,
probes and metrics open, keys from a file, a mounted Secret's directory or a variable, rotated
without a restart, compared in constant time and never logged."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from flask.testing import FlaskClient
from kubescribe_runtime import auth
from kubescribe_runtime.app import create_app
from kubescribe_runtime.config import ConfigError, ServeConfig, resolve
from kubescribe_runtime.service import Service
from openai.types.realtime import ClientSecretCreateResponse
from pydantic import SecretStr
from rt_fixtures import TONE_TOKENS, encode, tone_sentence, write_artifact
from rt_server import ServerProcess, running
from simple_websocket import Client, ConnectionError
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

pytestmark = pytest.mark.xdist_group("runtime-server")

KEY = "ks-live-3f9c2b7e1d"
OTHER_KEY = "ks-live-a81d44c0f2"
ROTATED_KEY = "ks-live-5e6f7a8b9c"


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("", set()),
        ("k1", {"k1"}),
        ("k1,k2, k3", {"k1", "k2", "k3"}),
        ("k1\n\n  k2  \n", {"k1", "k2"}),
        ("# team A\nk1\n  # old: k0\nk2\n", {"k1", "k2"}),
    ],
)
def test_keys_are_separated_by_commas_spaces_or_lines(text: str, keys: set[str]) -> None:
    assert auth.parse_keys(text) == keys


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (None, auth.MissingKey),
        ("", auth.MissingKey),
        (f"Basic {KEY}", auth.Unauthorized),
        ("Bearer", auth.Unauthorized),
        ("Bearer ", auth.Unauthorized),
        ("Bearer ks-live-3f9c2b7e1", auth.Unauthorized),  # a prefix of a key
        (f"Bearer {KEY}x", auth.Unauthorized),
        (f"Bearer {KEY.upper()}", auth.Unauthorized),
        (f"Bearer {KEY}", None),
        (f"bearer {KEY}", None),
        (f"Bearer {OTHER_KEY}", None),
    ],
)
def test_only_a_bearer_header_with_a_valid_key_passes(
    header: str | None, error: type[Exception] | None
) -> None:
    keys = auth.ApiKeys([KEY, OTHER_KEY])
    if error is None:
        keys.check(header)
    else:
        with pytest.raises(error) as refused:
            keys.check(header)
        assert KEY not in str(refused.value)


@pytest.mark.parametrize("presented", [KEY, OTHER_KEY, "nobody", "k" * 4096])
def test_every_key_is_compared_as_a_digest_whatever_matches(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No early exit and no length leak: one fixed-size constant-time comparison per key."""
    compared: list[tuple[int, int]] = []
    real = auth.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    keys = auth.ApiKeys([KEY, OTHER_KEY, ROTATED_KEY])
    keys.valid(presented)
    assert compared == [(32, 32)] * 3


def test_no_key_configured_means_no_check() -> None:
    assert auth.ApiKeys.from_config(ServeConfig()) is None


def test_a_mounted_secret_directory_gives_every_entry_and_skips_its_dot_entries(
    tmp_path: Path,
) -> None:
    secret = _secret_volume(tmp_path / "keys", {"team-a": KEY, "team-b": f"{OTHER_KEY}\n"})
    (secret / "..2026_11_29_hidden").mkdir(exist_ok=True)
    keys = auth.ApiKeys(path=secret)
    assert keys.valid(KEY) and keys.valid(OTHER_KEY)
    assert not keys.valid("..data")


def test_keys_rotate_when_the_file_changes(tmp_path: Path) -> None:
    now = [0.0]
    secret = _secret_volume(tmp_path / "keys", {"api-key": KEY})
    keys = auth.ApiKeys(path=secret, recheck_s=1.0, clock=lambda: now[0])
    assert keys.valid(KEY)
    _secret_volume(secret, {"api-key": ROTATED_KEY})
    now[0] = 0.5
    assert keys.valid(KEY)  # read again at most once a second
    now[0] = 1.5
    assert keys.valid(ROTATED_KEY) and not keys.valid(KEY)


def test_a_vanished_key_file_refuses_every_key_until_it_is_back(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "keys.txt"
    path.write_text(KEY)
    keys = auth.ApiKeys(path=path, clock=lambda: now[0])
    path.unlink()
    now[0] = 2.0
    assert not keys.valid(KEY)
    path.write_text(KEY)
    now[0] = 4.0
    assert keys.valid(KEY)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the API keys file"), ("# nobody yet\n", "no key")],
)
def test_a_missing_or_empty_key_file_fails_at_start(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "keys.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        auth.ApiKeys.from_config(ServeConfig(api_keys_file=path))


def test_keys_from_the_variable_never_show_in_the_configuration() -> None:
    config = resolve(ServeConfig, {}, {"KUBESCRIBE_API_KEYS": f"{KEY},{OTHER_KEY}"})
    assert KEY not in repr(config) and KEY not in str(config.model_dump())
    keys = auth.ApiKeys.from_config(config)
    assert keys is not None and keys.valid(KEY) and keys.valid(OTHER_KEY)


def _secret_volume(path: Path, entries: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a Secret: entries are links into ``..data``,
    a link swapped atomically on update."""
    path.mkdir(parents=True, exist_ok=True)
    version = path / f"..{time.monotonic_ns()}"
    version.mkdir()
    for name, value in entries.items():
        (version / name).write_text(value)
    (path / "..data_tmp").symlink_to(version.name)
    os.replace(path / "..data_tmp", path / "..data")
    for name in entries:
        link = path / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for stale in path.iterdir():
        if stale.is_symlink() and stale.name not in entries and stale.name != "..data":
            stale.unlink()
    return path


# -- the app ---------------------------------------------------------------------------------


@pytest.fixture
def app_client() -> FlaskClient:
    service = Service(
        ServeConfig(api_keys=SecretStr(KEY))
    )  # not loaded: routes past the check say 503
    return create_app(service).test_client()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_stay_open(app_client: FlaskClient, path: str) -> None:
    assert app_client.get(path).status_code != 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/audio/transcriptions"),
        ("GET", "/v1/realtime?intent=transcription"),
        ("GET", "/no/such/route"),
    ],
)
@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"Authorization": f"Bearer {OTHER_KEY}"}, "invalid_api_key")],
)
def test_every_other_route_needs_a_key(
    app_client: FlaskClient, method: str, path: str, headers: dict[str, str], code: str
) -> None:
    answer = app_client.open(path, method=method, headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    error = answer.get_json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert OTHER_KEY not in answer.get_data(as_text=True)


def test_a_valid_key_reaches_the_route(app_client: FlaskClient) -> None:
    answer = app_client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 503  # past the check; the model is not loaded here


def test_a_websocket_upgrade_without_a_key_is_refused_before_the_route(
    app_client: FlaskClient,
) -> None:
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    answer = app_client.get(
        "/v1/realtime?intent=transcription",
        headers=upgrade | {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
    )
    assert answer.status_code == 401


# -- the real server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _secret_volume(tmp_path_factory.mktemp("secret") / "api-keys", {"team-a": KEY})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, secret: Path) -> Iterator[ServerProcess]:
    """The real server (with a test-only WebSocket echo route) behind a mounted key Secret."""
    model = write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
    with running(
        model,
        tmp_path_factory.mktemp("logs"),
        "--log-level", "debug",
        env={"KUBESCRIBE_API_KEYS_FILE": str(secret)},
        entry=("tests/runtime/rt_echo_server.py",),
    ) as process:  # fmt: skip
        yield process
    for key in (KEY, OTHER_KEY, ROTATED_KEY):
        assert key not in process.log()


def _openai(server: ServerProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_the_openai_client_needs_a_valid_key(server: ServerProcess) -> None:
    audio = ("tones.wav", encode(tone_sentence("lo hi")))
    answer = _openai(server, KEY).audio.transcriptions.create(model="tone", file=audio)
    assert answer.text == "low high"
    with pytest.raises(openai.AuthenticationError) as refused:
        _openai(server, OTHER_KEY).audio.transcriptions.create(model="tone", file=audio)
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"


def test_the_server_keeps_probes_and_metrics_open(server: ServerProcess) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(server.url + path, timeout=10).status_code == 200
    assert requests.get(server.url + "/v1/models", timeout=10).status_code == 401


def test_a_websocket_without_a_valid_key_is_refused_at_the_upgrade(server: ServerProcess) -> None:
    url = server.url.replace("http://", "ws://")
    for path in ("/test/echo", "/v1/realtime?intent=transcription"):
        for headers in ({}, {"Authorization": f"Bearer {OTHER_KEY}"}):
            with pytest.raises(ConnectionError) as refused:
                Client.connect(url + path, headers=headers)
            assert refused.value.status_code == 401
    ws = Client.connect(url + "/test/echo", headers={"Authorization": f"Bearer {KEY}"})
    try:
        ws.send("hello")
        assert ws.receive(timeout=10) == "hello"
    finally:
        ws.close()


def test_the_official_realtime_client_needs_a_valid_key(server: ServerProcess) -> None:
    with _openai(server, KEY).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
    with pytest.raises(InvalidStatus) as refused:  # noqa: SIM117
        with _openai(server, OTHER_KEY).realtime.connect(extra_query={"intent": "transcription"}):
            pass
    assert refused.value.response.status_code == 401


def test_a_rotated_secret_takes_effect_without_a_restart(
    server: ServerProcess, secret: Path
) -> None:
    _secret_volume(secret, {"team-a": ROTATED_KEY})
    deadline = time.monotonic() + 30
    while _status(server, ROTATED_KEY) == 401:
        assert time.monotonic() < deadline, "the rotated key was never accepted"
        time.sleep(0.2)
    assert _status(server, ROTATED_KEY) == 200
    assert _status(server, KEY) == 401
    _secret_volume(secret, {"team-a": KEY})  # back, for the other tests
    while _status(server, KEY) == 401:
        assert time.monotonic() < deadline, "the restored key was never accepted"
        time.sleep(0.2)


def _status(server: ServerProcess, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.get(server.url + "/v1/models", headers=headers, timeout=10).status_code


# -- browsers: the key as a sub-protocol, ephemeral client secrets ---------------------------


@pytest.mark.parametrize(
    ("protocols", "error"),
    [
        (f"realtime, openai-insecure-api-key.{KEY}, openai-beta.realtime-v1", None),
        (f"openai-insecure-api-key.{OTHER_KEY}", None),
        ("realtime, openai-insecure-api-key.nobody", auth.Unauthorized),
        ("realtime, openai-insecure-api-key.", auth.MissingKey),
        ("realtime", auth.MissingKey),
    ],
)
def test_a_browser_presents_its_key_as_a_sub_protocol(
    protocols: str, error: type[Exception] | None
) -> None:
    keys = auth.ApiKeys([KEY, OTHER_KEY])
    if error is None:
        assert keys.check(None, protocols) in (KEY, OTHER_KEY)
    else:
        with pytest.raises(error):
            keys.check(None, protocols)


def test_a_client_secret_opens_realtime_sessions_only_until_it_expires() -> None:
    keys = auth.ApiKeys([KEY, OTHER_KEY])
    now = time.time()
    secret, expires = auth.mint_client_secret(OTHER_KEY, 600, now)
    assert secret.startswith("ek_") and expires == int(now) + 600
    assert KEY not in secret and OTHER_KEY not in secret
    assert keys.check(f"Bearer {secret}", ephemeral=True) == secret
    assert keys.check(None, f"realtime, openai-insecure-api-key.{secret}", ephemeral=True)
    with pytest.raises(auth.Unauthorized, match="realtime sessions only"):
        keys.check(f"Bearer {secret}")
    expired, _ = auth.mint_client_secret(KEY, 10, now - 60)
    tampered = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    later = str(int(now) + 7200)
    extended = "_".join(["ek", later, *secret.split("_")[2:]])
    for bad in (expired, tampered, extended, "ek_", "ek_1_2", "ek_x_y_z"):
        with pytest.raises(auth.Unauthorized):
            keys.check(f"Bearer {bad}", ephemeral=True)


def test_a_client_secret_dies_with_the_key_that_asked_for_it() -> None:
    secret, _ = auth.mint_client_secret(OTHER_KEY, 600, time.time())
    assert auth.ApiKeys([OTHER_KEY]).valid_client_secret(secret, time.time())
    assert not auth.ApiKeys([KEY]).valid_client_secret(secret, time.time())


def test_the_server_mints_client_secrets_a_browser_connects_with(server: ServerProcess) -> None:
    """``client.realtime.client_secrets.create`` with a key; the secret, as the browser's
    sub-protocol or as the official client's key, opens a realtime session and nothing else."""
    created = _openai(server, KEY).realtime.client_secrets.create(
        session={"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        expires_after={"anchor": "created_at", "seconds": 120},
    )
    raw = created.model_dump(exclude_unset=True)
    checked = ClientSecretCreateResponse.model_validate(raw)  # the SDK's strict type
    assert checked.session.type == "transcription"
    assert checked.expires_at == pytest.approx(time.time() + 120, abs=30)
    secret = created.value
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    protocols = ["realtime", f"openai-insecure-api-key.{secret}", "openai-beta.realtime-v1"]
    with ws_connect(url, subprotocols=protocols, open_timeout=10) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    with _openai(server, secret).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        assert conn.recv().type == "session.created"
    assert _status(server, secret) == 401  # not a key for the other routes
    with pytest.raises(openai.AuthenticationError):  # nor for minting more
        _openai(server, secret).realtime.client_secrets.create(session={"type": "transcription"})


def test_a_browser_with_a_wrong_key_sub_protocol_is_refused_at_the_upgrade(
    server: ServerProcess,
) -> None:
    url = server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{OTHER_KEY}"])  # type: ignore[list-item]
    assert refused.value.response.status_code == 401
    with ws_connect(  # type: ignore[arg-type]
        url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"], open_timeout=10
    ) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "session.created"


def test_client_secrets_are_minted_with_keys_off_and_name_what_they_cannot_serve() -> None:
    client = create_app(Service(ServeConfig())).test_client()
    answer = client.post("/v1/realtime/client_secrets", json={"session": {"type": "transcription"}})
    assert answer.status_code == 200
    ClientSecretCreateResponse.model_validate(answer.get_json())
    refused = client.post("/v1/realtime/client_secrets", json={"session": {"type": "realtime"}})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "unsupported_session_type"
    too_long = client.post(
        "/v1/realtime/client_secrets", json={"expires_after": {"seconds": 10**6}}
    )
    assert too_long.status_code == 400
    assert too_long.get_json()["error"]["param"] == "expires_after.seconds"
