"""The local control plane's own promises (cluster/, `make cluster`, `make demo`, `make down`):
pinned binaries, loopback only, exports last, everything stopped by PID afterwards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kube_cluster import ROOT, Cluster

VERSIONS = dict(
    line.split("=", 1)
    for line in (ROOT / "cluster" / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
EXPORTS = re.compile(r"^export KUBECONFIG=(\S+)\nexport PATH=(\S+):\"\$PATH\"$")


@pytest.mark.parametrize(
    ("program", "args", "pin"),
    [
        ("kube-apiserver", ["--version"], "K8S_VERSION"),
        ("kube-controller-manager", ["--version"], "K8S_VERSION"),
        ("kube-scheduler", ["--version"], "K8S_VERSION"),
        ("kubectl", ["version", "--client"], "K8S_VERSION"),
        ("etcd", ["--version"], "ETCD_VERSION"),
        ("kwok", ["--version"], "KWOK_VERSION"),
        ("helm", ["version", "--short"], "HELM_VERSION"),
    ],
)
def test_each_binary_prints_its_pin(
    cluster: Cluster, program: str, args: list[str], pin: str
) -> None:
    out = subprocess.run([str(cluster.bin / program), *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert VERSIONS[pin].lstrip("v") in out.stdout + out.stderr
    assert not cluster.bin.is_relative_to(ROOT)  # cached outside the repository


def listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets these processes listen on (from /proc)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1].rsplit(":", 1)[0])
    return found


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_make_demo_ends_ready_with_the_exports_and_make_down_stops_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    state = tmp_path / "demo-cluster"
    env = {**os.environ, "KUBESCRIBE_CLUSTER_DIR": str(state), "VENV": str(Path(sys.prefix))}
    demo = subprocess.run(
        ["bash", "cluster/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    try:
        assert demo.returncode == 0, demo.stderr[-5000:]
        assert "demo" in demo.stderr and "Ready" in demo.stderr  # kubectl get / describe shown
        match = EXPORTS.search(demo.stdout.strip())
        assert match, demo.stdout
        assert Path(match[1]) == state / "kubeconfig" and Path(match[2]) == cluster.bin
        pids = set(json.loads((state / "cluster.json").read_text())["pids"].values())
        assert len(pids) == 6  # etcd, API server, controller-manager, scheduler, KWOK, operator
        listening = listening_addresses(pids)
        assert listening and listening <= LOOPBACK_HEX, listening
        phase = subprocess.run(
            [str(cluster.bin / "kubectl"), "--kubeconfig", match[1], "get", "speechmodel",
             "demo", "-n", "speech", "-o", "jsonpath={.status.phase}"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert phase.stdout == "Ready", phase.stderr
    finally:
        down = subprocess.run(
            [sys.executable, "cluster/local_cluster.py", "down", "--state-dir", str(state)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def test_make_serve_installs_the_runtime_alone() -> None:
    dry = subprocess.run(
        ["make", "-n", "serve", "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert any("'.[runtime]'" in line for line in installs), installs
    assert not any("torch" in line or "[dev]" in line for line in installs), installs
