"""Run the real operator (`python -m kubescribe_operator.process`) against the local API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

FAST_FLAGS = (
    "--liveness-port", "0",
    "--metrics-port", "0",
    "--resync-seconds", "1",
    "--retry-backoff-seconds", "0.3",
    "--log-format", "json",
    "--peering-lifetime", "2",
)  # fmt: skip


class OperatorProcess:
    """One operator process at a time; ``restart`` kills it hard (as a crashed pod would be)."""

    def __init__(self, kubeconfig: Path, log_dir: Path, *extra: str) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.extra = extra if "--namespace" in extra else ("--all-namespaces", *extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def metrics_url(self) -> str:
        """The /metrics URL, when started with ``--metrics-port``."""
        port = self.extra[self.extra.index("--metrics-port") + 1]
        return f"http://127.0.0.1:{port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.runs}.log"

    def start(self) -> None:
        assert self.proc is None
        self.runs += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubescribe_operator.process", *FAST_FLAGS, *self.extra],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{i}.log").read_text(errors="replace")
            for i in range(1, self.runs + 1)
        )
