"""The server speaks HTTP and WebSocket on one port, over one loaded model: a flask-sock route
(a test-only echo) works through the real server process, beside the transcription route."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from rt_fixtures import TONE_TOKENS, encode, tone_sentence, write_artifact
from rt_server import ServerProcess, post, running
from simple_websocket import Client

pytestmark = pytest.mark.xdist_group("runtime-server")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = write_artifact(tmp_path_factory.mktemp("model") / "tone", TONE_TOKENS)
    with running(
        model, tmp_path_factory.mktemp("logs"), entry=("tests/runtime/rt_echo_server.py",)
    ) as process:
        yield process


def ws_url(server: ServerProcess) -> str:
    return server.url.replace("http://", "ws://") + "/test/echo"


@pytest.mark.parametrize("message", ["hello", b"\x00\x01binary\xff", "x" * 100_000])
def test_websocket_echo(server: ServerProcess, message: str | bytes) -> None:
    ws = Client.connect(ws_url(server))
    try:
        ws.send(message)
        assert ws.receive(timeout=10) == message
    finally:
        ws.close()


def test_http_served_while_websockets_are_open(server: ServerProcess) -> None:
    sockets = [Client.connect(ws_url(server)) for _ in range(4)]
    try:
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda p: post(server.url, encode(tone_sentence(p)), mime="audio/wav"),
                    ["lo hi", "hi lo", "lo hi lo"],
                )
            )
        assert [a.json()["text"] for a in answers] == ["low high", "high low", "low high low"]
        for i, ws in enumerate(sockets):
            ws.send(f"still here {i}")
            assert ws.receive(timeout=10) == f"still here {i}"
    finally:
        for ws in sockets:
            ws.close()
