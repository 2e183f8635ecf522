"""Start the real `kubescribe serve` process on a free loopback port, and stop it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from kubescribe_runtime.config import DEMO_MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]


def wait_until(
    condition: Callable[[], object], what: str, seconds: float = 60.0, step: float = 0.02
) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` (the condition that never came)
    after ``seconds``: every wait in the runtime tests is bounded."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def start_server(
    model_dir: Path,
    log_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
    wrapper: tuple[str, ...] = (),
    entry: tuple[str, ...] = ("-m", "kubescribe.cli", "serve"),
) -> ServerProcess:
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    examples = DEMO_MODEL_DIR.resolve().parent  # the real models: examples/models/*
    if examples not in Path(model_dir).resolve().parents and "--vad" not in args:
        # The self-made models' audio is tones, which Silero VAD rightly hears as no speech:
        # their servers decode every window (a test of the VAD itself says --vad).
        args = (*args, "--vad", "off")
    command = [
        *wrapper,
        sys.executable, *entry,
        "--model-dir", str(model_dir), "--port", str(port), "--threads", "1", *args,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KUBESCRIBE_")} | (
        env or {}
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            path = "/readyz" if ready else "/healthz"
            if requests.get(server.url + path, timeout=2).status_code == 200:
                return server
        except (requests.ConnectionError, requests.Timeout):  # up, still importing
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log()}")


@contextlib.contextmanager
def running(
    model_dir: Path, log_dir: Path, *args: str, drains_clean: bool = True, **kw: Any
) -> Iterator[ServerProcess]:
    """The runtime tests' one server fixture: a server for the block; stopped after it with
    SIGTERM, and (``drains_clean``) its drain asserted clean: exit status 0."""
    server = start_server(model_dir, log_dir, *args, **kw)
    try:
        yield server
    finally:
        code = server.stop()
    if drains_clean:
        assert code == 0, f"the server did not drain cleanly (exit {code}):\n{server.log()}"


def post(
    url: str,
    data: bytes,
    name: str = "audio.wav",
    *,
    model: str = "demo",
    mime: str = "application/octet-stream",
    timeout: float = 300,
    **form: str,
) -> requests.Response:
    """A transcription request, as a client uploads a file."""
    return requests.post(
        url + "/v1/audio/transcriptions",
        files={"file": (name, data, mime)},
        data={"model": model, **form},
        timeout=timeout,
    )


def metric(server: ServerProcess, name: str) -> float:
    """An unlabelled sample of the server's /metrics."""
    text = requests.get(server.url + "/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))
