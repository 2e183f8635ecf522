"""The local control plane's own promises (cluster/, `make cluster`, `make demo`, `make down`):
pinned binaries, loopback only (or the real node's own addresses), exports last, everything
stopped by PID afterwards and nothing of the real node left on the host."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from kube_cluster import ROOT, Cluster
from local_cluster import FORCE_NO_NODE_ENV
from node_host import Slot, host_iptables_chains, leftovers
from procs import alive

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
        ("kubelet", ["--version"], "K8S_VERSION"),
        ("kube-proxy", ["--version"], "K8S_VERSION"),
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
    """Local addresses of the TCP sockets these processes listen on (from /proc; each process's
    own network namespace: the real node's processes run in the node's)."""
    found = set()
    for pid in pids:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    found.add(fields[1].rsplit(":", 1)[0])
    return found


def ip_hex(ip: str) -> str:
    """An IPv4 address as /proc/net/tcp writes it (host byte order, x86: little-endian)."""
    return "".join(f"{int(octet):02X}" for octet in reversed(ip.split(".")))


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
CONTROL_PLANE = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
NODE_PROCESSES = {"containerd", "kubelet", "kube-proxy"}


def allowed_addresses(state: dict[str, Any]) -> set[str]:
    """Loopback, and with a real node the two ends of its veth (the cluster's own namespace)."""
    if state.get("node_slot") is None:
        return LOOPBACK_HEX
    slot = Slot(state["node_slot"])
    return LOOPBACK_HEX | {ip_hex(slot.host_ip), ip_hex(slot.node_ip)}


def assert_nothing_left(state_dir: Path, state: dict[str, Any]) -> None:
    pids = set(state["pids"].values())
    assert not state_dir.exists()
    assert not any(alive(pid) for pid in pids)  # gone, or a zombie init has yet to reap
    if state.get("node_slot") is not None:
        left = leftovers(Slot(state["node_slot"]), state_dir)
        assert not left, left
    assert not host_iptables_chains()  # kube-proxy's and the CNI's rules lived in the namespace


TRANSCRIPT = re.compile(
    r"^transcript of examples/audio/sample\.wav through service/demo: (.*)$", re.MULTILINE
)


def demo_transcript() -> str:
    """What the runtime says of the sample in-process, on the demo model the pod fetched."""
    from kubescribe_runtime.config import DEMO_MODEL_DIR, ServeConfig
    from kubescribe_runtime.service import build_transcriber

    transcriber = build_transcriber(ServeConfig(model_dir=DEMO_MODEL_DIR, max_batch_size=1))
    try:
        return transcriber.transcribe((ROOT / "examples/audio/sample.wav").read_bytes()).text
    finally:
        transcriber.batcher.close()


@pytest.mark.timeout(1200)  # only bounds a hang: a real node, two images imported, two pods
def test_make_demo_ends_ready_with_the_exports_and_make_down_stops_it(cluster: Cluster) -> None:
    """The operator in a pod of the built image, the artifact fetched over https from the
    demo's own server (digest checked), the model Ready on the real node, and a transcript of
    the sample through its Service printed before the exports."""
    # A short path: containerd's socket lives under the state directory (at most 104 bytes).
    state = Path(tempfile.mkdtemp(prefix="ks-demo-")) / "c"
    env = {**os.environ, "KUBESCRIBE_CLUSTER_DIR": str(state), "VENV": str(Path(sys.prefix))}
    demo = subprocess.run(
        ["bash", "cluster/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=1100,
    )  # fmt: skip
    try:
        assert demo.returncode == 0, demo.stderr[-5000:]
        assert "demo" in demo.stderr and "Ready" in demo.stderr  # kubectl get / describe shown
        match = EXPORTS.search(demo.stdout.strip())
        assert match, demo.stdout
        assert Path(match[1]) == state / "kubeconfig" and Path(match[2]) == cluster.bin
        started = json.loads((state / "cluster.json").read_text())
        pids = set(started["pids"].values())
        # The operator runs in the cluster; here only the artifact server the demo started.
        assert started.get("node_slot") is not None, demo.stderr[-3000:]
        assert set(started["pids"]) == CONTROL_PLANE | NODE_PROCESSES | {"artifacts"}
        listening = listening_addresses(pids)
        assert listening and listening <= allowed_addresses(started), listening
        phase = subprocess.run(
            [str(cluster.bin / "kubectl"), "--kubeconfig", match[1], "get", "speechmodel",
             "demo", "-n", "speech", "-o", "jsonpath={.status.phase}"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert phase.stdout == "Ready", phase.stderr
        said = TRANSCRIPT.search(demo.stderr)
        assert said, demo.stderr[-3000:]
        print(said[0])
        assert said[1] == demo_transcript()
        assert demo.stderr.index(said[0]) > demo.stderr.index("fetched: ")  # the fetch's log
    finally:
        down = subprocess.run(
            [sys.executable, "cluster/local_cluster.py", "down", "--state-dir", str(state)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert_nothing_left(state, started)
    state.parent.rmdir()


def test_make_cluster_says_in_one_line_when_no_real_node_can_run_and_runs_kwok(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The path of a machine without root or namespaces, forced: one line, then KWOK alone."""
    state = tmp_path / "no-node"
    env = {**os.environ, FORCE_NO_NODE_ENV: "forced by the test"}
    up = subprocess.run(
        [sys.executable, "cluster/local_cluster.py", "up", "--real-node", "--state-dir",
         str(state)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        said = [line for line in up.stderr.splitlines() if "no real node" in line]
        print(said)
        assert len(said) == 1 and "forced by the test" in said[0]
        started = json.loads((state / "cluster.json").read_text())
        assert started["node_slot"] is None and set(started["pids"]) == CONTROL_PLANE
        kubeconfig = EXPORTS.search(up.stdout.strip())
        assert kubeconfig, up.stdout
        nodes = subprocess.run(
            [str(cluster.bin / "kubectl"), "--kubeconfig", kubeconfig[1], "get", "nodes",
             "-o", "name"], capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert sorted(nodes) == [f"node/kwok-{k}-{i}" for k in ("cpu", "gpu") for i in (0, 1)]
        listening = listening_addresses(set(started["pids"].values()))
        assert listening and listening <= LOOPBACK_HEX, listening
    finally:
        down = subprocess.run(
            [sys.executable, "cluster/local_cluster.py", "down", "--state-dir", str(state)],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert_nothing_left(state, started)


def test_make_serve_installs_the_runtime_alone() -> None:
    dry = subprocess.run(
        ["make", "-n", "serve", "VENV=/nonexistent/venv"], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert any("'.[runtime]'" in line for line in installs), installs
    assert not any("torch" in line or "[dev]" in line for line in installs), installs
