"""A real Kubernetes control plane on loopback, from the binaries cluster/build.sh makes.

etcd, kube-apiserver (TLS, RBAC, service-account issuer, OwnerReferencesPermissionEnforcement,
an audit log of every request), kube-controller-manager, kube-scheduler and KWOK, whose fake
CPU and GPU nodes run the pods (cluster/kwok-stages.yaml). Only the standard library and the
`openssl` command are needed, so `make cluster` runs before any virtualenv exists.

    python3 cluster/local_cluster.py up   [--state-dir DIR]   # prints export lines last
    python3 cluster/local_cluster.py down [--state-dir DIR]   # stops every process by PID
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
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
from pki import Pki, make_pki  # noqa: E402

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.1/16"
STARTUP_TIMEOUT_S = 120.0
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "horizontal-pod-autoscaler-controller",
    "disruption-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "resourcequota-controller",
    "endpointslice-controller",
)
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class LocalCluster:
    """One control plane, its state under ``state_dir`` (removed by ``stop``)."""

    def __init__(
        self, state_dir: Path, bin_dir: Path | None = None, detached: bool = False
    ) -> None:
        # detached: the processes outlive this one (`make cluster`); otherwise they get SIGTERM
        # when it dies, so a killed test run leaves nothing behind.
        self.detached = detached
        self.dir = state_dir.resolve()
        self.bin = (bin_dir or build()).resolve()
        self.state: State | None = None

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
        return f"https://127.0.0.1:{self.state.api_port}"

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
        make_pki(self.dir / "pki", SERVICE_IP)
        self._write_kubeconfig()
        try:
            self._spawn("etcd", self._etcd_args())
            self._wait(self._etcd_healthy, "etcd")
            self._spawn("kube-apiserver", self._apiserver_args())
            self._wait(self._api_ready, "kube-apiserver")
            self._spawn("kube-controller-manager", self._controller_manager_args())
            self._spawn("kube-scheduler", self._scheduler_args())
            self._spawn("kwok", self._kwok_args())
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

    def stop(self, keep_state: bool = False) -> None:
        state = self.state or self._load_state()
        if state is not None:
            for name in reversed(list(state.pids)):
                _terminate(state.pids[name], name)
        self.state = None
        if not keep_state:
            shutil.rmtree(self.dir, ignore_errors=True)

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
        _terminate(self.state.pids.pop("kube-apiserver"), "kube-apiserver")
        if while_down is not None:
            while_down()
        self._spawn("kube-apiserver", self._apiserver_args())
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
    def _spawn(self, name: str, args: Sequence[str]) -> None:
        assert self.state is not None
        with (self.dir / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                [str(self.bin / name), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # no terminal signals; stopped by PID
                preexec_fn=None if self.detached else _die_with_parent,
            )
        self.state.pids[name] = proc.pid
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
                if not _alive(pid):
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

    def _default_serviceaccount(self) -> bool:
        return self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0

    # ------------------------------------------------------------- arguments
    def _etcd_args(self) -> list[str]:
        assert self.state is not None
        client = f"http://127.0.0.1:{self.state.etcd_port}"
        peer = f"http://127.0.0.1:{self.state.etcd_peer_port}"
        return [
            "--name=local",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        assert self.state is not None
        pki = self.pki
        return [
            f"--etcd-servers=http://127.0.0.1:{self.state.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.state.api_port}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            f"--audit-policy-file={HERE / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
            "--audit-log-maxsize=0",
            "--profiling=false",
            "--v=0",
        ]

    def _component_args(self) -> list[str]:
        """What controller-manager and scheduler share: admin credentials, one instance, no
        serving port of their own."""
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ]

    def _controller_manager_args(self) -> list[str]:
        return [
            *self._component_args(),
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={self.pki.sa_key}",
            f"--root-ca-file={self.pki.ca_cert}",
            f"--cluster-signing-cert-file={self.pki.ca_cert}",
            f"--cluster-signing-key-file={self.pki.ca_key}",
            "--horizontal-pod-autoscaler-sync-period=5s",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
        ]

    def _scheduler_args(self) -> list[str]:
        return self._component_args()

    def _kwok_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--config={HERE / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ]

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


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:  # not our child (another process started it)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, name: str, timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
        log(f"{name} (pid {pid}) ignored {sig.name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster/local_cluster.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "env", "adopt"))
    parser.add_argument("--state-dir", type=Path, default=HERE.parent / ".cluster")
    parser.add_argument("--name", help="adopt: the process's name")
    parser.add_argument("--pid", type=int, help="adopt: the process to stop with the cluster")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = LocalCluster(args.state_dir, detached=True)
            cluster.start()
            print("\n".join(cluster.exports()))
        elif args.command == "down":
            LocalCluster(args.state_dir, bin_dir=Path("/")).stop()
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
