"""A real Kubernetes control plane on loopback, from the binaries cluster/build.sh makes.

etcd, kube-apiserver (TLS, RBAC, service-account issuer, OwnerReferencesPermissionEnforcement,
an audit log of every request), kube-controller-manager, kube-scheduler and KWOK, whose fake
CPU and GPU nodes run the pods (cluster/kwok-stages.yaml); with ``real_node``, one real node
beside them (cluster/node.py: containerd, kubelet, kube-proxy in a network namespace of its own),
and the API server then listens on the host side of the node's veth instead of loopback. Only
the standard library and the `openssl` command are needed, so `make cluster` runs before any
virtualenv exists.

    python3 cluster/local_cluster.py up   [--state-dir DIR] [--no-real-node]  # exports last
    python3 cluster/local_cluster.py down [--state-dir DIR]   # stops every process by PID
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script: pki.py sits beside it
    sys.path.insert(0, str(HERE))
import components  # noqa: E402
import node_host  # noqa: E402
from components import SERVICE_IP, free_port  # noqa: E402
from node import NODE_NAME, NodeImages, RealNode, missing_programs  # noqa: E402
from pki import Pki, make_pki  # noqa: E402
from procs import alive, die_with_parent, log, terminate  # noqa: E402

STARTUP_TIMEOUT_S = 120.0
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


REAL_NODE_ENV = "KUBESCRIBE_REAL_NODE"
# Set to a reason, the real node is refused as on a machine that cannot run one (tests of that
# path run where it can).
FORCE_NO_NODE_ENV = "KUBESCRIBE_NO_REAL_NODE"


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


def build(repo: Path = HERE.parent) -> Path:
    """The bin directory, building what is missing (cluster/build.sh shows its progress)."""
    out = subprocess.run(
        ["bash", str(repo / "cluster" / "build.sh")], stdout=subprocess.PIPE, text=True
    )
    if out.returncode != 0:
        raise ClusterError(f"cluster/build.sh failed (exit {out.returncode})")
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class State:
    """What `down` (maybe another process) needs: ports, paths, PIDs."""

    bin: str
    etcd_port: int
    etcd_peer_port: int
    api_port: int
    pids: dict[str, int] = field(default_factory=dict)
    api_host: str = "127.0.0.1"
    node_slot: int | None = None  # the real node's (node_host.Slot), None without one


class LocalCluster:
    """One control plane, its state under ``state_dir`` (removed by ``stop``)."""

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        detached: bool = False,
        real_node: bool = False,
    ) -> None:
        # detached: the processes outlive this one (`make cluster`); otherwise they get SIGTERM
        # when it dies, so a killed test run leaves nothing behind.
        # real_node: make room for a real node (its namespace, the API server on its veth);
        # start_node starts it.
        self.detached = detached
        self.dir = state_dir.resolve()
        self.bin = (bin_dir or build()).resolve()
        self.state: State | None = None
        self.real_node = real_node
        self.node_skipped = ""  # why no real node runs although one was asked for

    # ----------------------------------------------------------------- paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / "logs" / "audit.log"

    @property
    def pki(self) -> Pki:
        return Pki(self.dir / "pki")

    @property
    def server(self) -> str:
        assert self.state is not None
        return f"https://{self.state.api_host}:{self.state.api_port}"

    @property
    def node(self) -> RealNode | None:
        if self.state is None or self.state.node_slot is None:
            return None
        return RealNode(node_host.Slot(self.state.node_slot), self.dir / "node", self.bin, self.pki)

    @property
    def state_file(self) -> Path:
        return self.dir / "cluster.json"

    def exports(self) -> list[str]:
        return [
            f"export KUBECONFIG={self.kubeconfig}",
            f'export PATH={self.bin}:"$PATH"',
        ]

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        t0 = time.monotonic()
        if self.state_file.exists():
            raise ClusterError(f"{self.dir} holds a running cluster: stop it first (make down)")
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.state = State(str(self.bin), free_port(), free_port(), free_port())
        try:
            slot = self._node_slot()
            if slot is not None:
                self.state.node_slot, self.state.api_host = slot.index, slot.host_ip
                self._save_state()
            service_ip = slot.service_ip if slot else SERVICE_IP
            make_pki(self.dir / "pki", service_ip, (slot.host_ip,) if slot else ())
            if self.node is not None:
                self.node.certificates()
            self._write_kubeconfig()
            self._spawn("etcd", components.etcd_args(self))
            self._wait(self._etcd_healthy, "etcd")
            self._spawn("kube-apiserver", components.apiserver_args(self))
            self._wait(self._api_ready, "kube-apiserver")
            self._spawn("kube-controller-manager", components.controller_manager_args(self))
            self._spawn("kube-scheduler", components.scheduler_args(self))
            self._spawn("kwok", components.kwok_args(self))
            self.kubectl("apply", "-f", str(HERE / "manifests" / "nodes.yaml"))
            self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
            # The API server taints new nodes not-ready; the node-lifecycle controller would lift
            # it once KWOK reports them Ready, but it also wants kubelet leases: lift it here.
            self.kubectl("taint", "nodes", "--all", "node.kubernetes.io/not-ready:NoSchedule-")
            self._wait(self._default_serviceaccount, "the default ServiceAccount")
        except BaseException:
            self.stop()
            raise
        log(f"control plane up in {time.monotonic() - t0:.1f} s: {self.server}")

    def _node_slot(self) -> node_host.Slot | None:
        """The real node's slot, or None (with the reason logged in one line) where this
        machine cannot run one; the KWOK nodes run either way."""
        if not self.real_node:
            return None
        try:
            if reason := os.environ.get(FORCE_NO_NODE_ENV):
                raise node_host.NodeHostError(f"{reason} ({FORCE_NO_NODE_ENV})")
            if missing := missing_programs(self.bin):
                raise node_host.NodeHostError(f"missing {', '.join(missing)}")
            return node_host.acquire(self.dir)
        except node_host.NodeHostError as exc:
            self.node_skipped = str(exc)
            log(f"no real node (KWOK nodes only): {exc}")
            return None

    def start_node(self, images: NodeImages) -> RealNode:
        """Start the real node (containerd with ``images`` imported, kubelet, kube-proxy) and
        wait until it is Ready. Needs ``real_node`` and a machine that can run it."""
        node = self.node
        if node is None:
            raise ClusterError(f"no real node here: {self.node_skipped or 'real_node not set'}")
        t0 = time.monotonic()
        try:
            node.start(self._spawn_node, self.write_kubeconfig, images, self._wait)
            self._wait(self._node_registered, f"node {NODE_NAME} registered")
            self.kubectl("wait", "--for=condition=Ready", f"node/{NODE_NAME}", "--timeout=180s")
        except BaseException:
            self.stop()
            raise
        # As for the KWOK nodes: no node-lifecycle controller runs to lift this taint.
        self.kubectl("taint", "nodes", NODE_NAME, "node.kubernetes.io/not-ready:NoSchedule-")
        log(f"real node {NODE_NAME} Ready in {time.monotonic() - t0:.1f} s ({node.slot.node_ip})")
        return node

    def stop(self, keep_state: bool = False) -> list[str]:
        """Stop every process and remove what the real node made; returns what is left of
        it on the host (nothing, unless something resisted)."""
        state = self.state or self._load_state()
        left: list[str] = []
        if state is not None:
            for name in reversed(list(state.pids)):
                terminate(state.pids[name], name)
            if state.node_slot is not None:
                slot = node_host.Slot(state.node_slot)
                removed = node_host.teardown(slot, self.dir)
                node_host.restore_host()
                left = node_host.leftovers(slot, self.dir) + [
                    f"file {path}" for path in removed if path.exists()
                ]
                if left:
                    log(f"left on the host after stopping the real node: {left}")
        self.state = None
        if not keep_state:
            shutil.rmtree(self.dir, ignore_errors=True)
        return left

    def adopt(self, name: str, pid: int) -> None:
        """Stop ``pid`` with the cluster (e.g. an operator that `make demo` started)."""
        self.state = self._load_state()
        if self.state is None:
            raise ClusterError(f"no cluster runs in {self.dir}")
        self.state.pids[name] = pid
        self.state_file.write_text(json.dumps(asdict(self.state), indent=1))

    def restart_apiserver(self, while_down: Callable[[], object] | None = None) -> None:
        """Stop the API server (SIGTERM) and start it again on the same port; ``while_down``
        runs in between (an outage of its length)."""
        assert self.state is not None
        terminate(self.state.pids.pop("kube-apiserver"), "kube-apiserver")
        if while_down is not None:
            while_down()
        self._spawn("kube-apiserver", components.apiserver_args(self))
        self._wait(self._api_ready, "kube-apiserver")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
        )
        if check and out.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out

    # ------------------------------------------------------------ processes
    def _spawn(self, name: str, args: Sequence[str], argv: Sequence[str] = ()) -> None:
        """Start ``name`` from the bin directory with ``args`` (or the command ``argv``)."""
        assert self.state is not None
        slot = None
        if argv and self.state.node_slot is not None:
            slot = node_host.Slot(self.state.node_slot)

        def prepare() -> None:
            if not self.detached:
                die_with_parent()
            if slot is not None:  # a node process: into the node's cgroup
                node_host.join_node_cgroup(slot)

        with (self.dir / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                list(argv) or [str(self.bin / name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # no terminal signals; stopped by PID
                preexec_fn=prepare,
            )
        self.state.pids[name] = proc.pid
        self._save_state()

    def _spawn_node(self, name: str, argv: Sequence[str]) -> None:
        self._spawn(name, (), argv)

    def _save_state(self) -> None:
        assert self.state is not None
        self.state_file.write_text(json.dumps(asdict(self.state), indent=1))

    def _load_state(self) -> State | None:
        try:
            return State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _wait(self, probe: object, what: str, timeout: float = STARTUP_TIMEOUT_S) -> None:
        assert callable(probe) and self.state is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, pid in self.state.pids.items():
                if not alive(pid):
                    tail = (self.dir / "logs" / f"{name}.log").read_text(errors="replace")
                    raise ClusterError(f"{name} exited:\n{tail[-3000:]}")
            if probe():
                return
            time.sleep(0.25)
        raise ClusterError(f"{what} not ready after {timeout:.0f} s (logs in {self.dir}/logs)")

    # ----------------------------------------------------------------- probes
    def _etcd_healthy(self) -> bool:
        assert self.state is not None
        try:
            url = f"http://127.0.0.1:{self.state.etcd_port}/health"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(json.load(r).get("health") == "true")
        except OSError:
            return False

    def _api_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        try:
            with urllib.request.urlopen(f"{self.server}/readyz", timeout=2, context=ctx) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def _node_registered(self) -> bool:
        return self.kubectl("get", "node", NODE_NAME, check=False).returncode == 0

    def _default_serviceaccount(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

    # ------------------------------------------------------------- arguments
    def write_kubeconfig(self, path: Path, user: str, credentials: dict[str, str]) -> Path:
        """A kubeconfig for this cluster as ``user`` (client certificate or token)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.pki.ca_cert),
                    },
                }
            ],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    def _write_kubeconfig(self) -> None:
        pki = self.pki
        self.write_kubeconfig(
            self.kubeconfig,
            "admin",
            {"client-certificate": str(pki.admin_cert), "client-key": str(pki.admin_key)},
        )


def repository_images() -> NodeImages:
    """The runtime, operator and pause images built from this repository (cluster/images.py)."""
    from images import ensure_images

    built = ensure_images()
    return NodeImages(tuple(built.archives), built.pause)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster/local_cluster.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "env", "adopt"))
    parser.add_argument("--state-dir", type=Path, default=HERE.parent / ".cluster")
    parser.add_argument("--name", help="adopt: the process's name")
    parser.add_argument("--pid", type=int, help="adopt: the process to stop with the cluster")
    parser.add_argument(
        "--real-node",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get(REAL_NODE_ENV, "1") != "0",
        help=f"up: start a real node beside the KWOK ones (default on; ${REAL_NODE_ENV}=0: off)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = LocalCluster(args.state_dir, detached=True, real_node=args.real_node)
            cluster.start()
            if cluster.node is not None:
                cluster.start_node(repository_images())
            print("\n".join(cluster.exports()))
        elif args.command == "down":
            if LocalCluster(args.state_dir, bin_dir=Path("/")).stop():
                return 1
            log(f"stopped; removed {args.state_dir}")
        elif args.command == "adopt":
            LocalCluster(args.state_dir, bin_dir=Path("/")).adopt(args.name, args.pid)
        else:
            cluster = LocalCluster(args.state_dir, bin_dir=Path(build()))
            print("\n".join(cluster.exports()))
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
