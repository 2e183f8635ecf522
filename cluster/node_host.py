"""What a real node takes from the host, and gives back: a network namespace with a veth to the
host, two host routes, a cgroup tree and the mounts its kubelet and containerd make.

Each cluster with a real node holds one slot ``k`` (0-15), taken under a host-wide lock while its
namespace is made, so two clusters on one machine never share an address, a route or a cgroup:

    netns  kubescribe-k           node side of the veth: eth0 10.250.k.2/30 (the node's InternalIP)
    veth   ksk-h 10.250.k.1/30    host side; the API server listens here as well as for the node
    pods   10.(112+k).0.0/16      on the bridge cni0 inside the namespace (CNI bridge + host-local)
    svc    10.(96+k).0.0/16       ClusterIPs, DNAT'ed by kube-proxy inside the namespace
    cgroup /kubescribe-k          in every v1 hierarchy: node/ (containerd, shims, kubelet,
                                  kube-proxy) and kubepods/ (the kubelet's pods)

The host routes the pod and Service ranges through the veth, so a test on the host reaches pods
and ClusterIPs; no iptables rule is made on the host (kube-proxy's and the CNI's live in the
namespace and go with it). `teardown` undoes all of it from the slot number alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from procs import alive

CGROUP_FS = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
LOCK = Path("/run/lock/kubescribe-node.lock")
SLOTS = 16
# Fixed paths outside the state directory that the kubelet, containerd 1.6's shims and libcni
# write to; teardown removes this node's entries (found from its containerd's state).
CONTAINER_LOG_LINKS = Path("/var/log/containers")
SHIM_SOCKETS = Path("/run/containerd/s")
CNI_RESULTS = Path("/var/lib/cni/results")
KUBELET_DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
# Machine-wide sysctls the kubelet sets to its liking at start (kernel.panic=10 where this VM
# boots with panic=1, ...): saved before the first node here starts, put back after the last.
KUBELET_SYSCTLS = (
    "vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes",
)  # fmt: skip
SYSCTL_SNAPSHOT = LOCK.parent / "kubescribe-node-sysctl.json"


class NodeHostError(RuntimeError):
    """The host cannot give a real node what it needs (not root, no namespaces, ...)."""


@dataclass(frozen=True)
class Slot:
    index: int

    @property
    def netns(self) -> str:
        return f"kubescribe-{self.index}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def host_if(self) -> str:
        return f"ks{self.index}-h"

    @property
    def host_ip(self) -> str:
        return f"10.250.{self.index}.1"

    @property
    def node_ip(self) -> str:
        return f"10.250.{self.index}.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.{112 + self.index}.0.0/16"

    @property
    def service_cidr(self) -> str:
        return f"10.{96 + self.index}.0.0/16"

    @property
    def service_ip(self) -> str:  # the `kubernetes` Service
        return f"10.{96 + self.index}.0.1"

    @property
    def cgroup(self) -> str:
        return f"kubescribe-{self.index}"

    def in_netns(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (nsenter keeps /sys and the cgroup mounts; `ip netns
        exec` would remount /sys and hide them from the kubelet)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]


def _run(*argv: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise NodeHostError(f"{' '.join(argv)}: {out.stderr.strip()}")


def check_host() -> None:
    """Raise with one line where this machine cannot run a real node."""
    if os.geteuid() != 0:
        raise NodeHostError("a real node needs root (network namespace, cgroups, mounts)")
    if not (CGROUP_FS / "memory").is_dir():
        raise NodeHostError("a real node needs the cgroup v1 memory hierarchy at /sys/fs/cgroup")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise NodeHostError(f"no network namespaces here: {probe.stderr.strip()}")


def owner_file(slot: Slot) -> Path:
    """Who holds the slot: the acquiring process and the cluster's state directory."""
    return LOCK.parent / f"kubescribe-node-{slot.index}.owner"


def _abandoned(slot: Slot) -> Path | None:
    """The state directory of a slot whose cluster is gone without its teardown (a test run
    killed hard: its processes died with it, its pods, mounts and namespace did not), else
    None. A cluster still starting has its acquiring process alive; a running one (also one
    `make cluster` detached) has live PIDs in its cluster.json."""
    try:
        owner = json.loads(owner_file(slot).read_text())
    except (OSError, ValueError):
        return None  # no record: not ours to judge
    state_dir = Path(owner["state_dir"])
    try:
        pids = list(json.loads((state_dir / "cluster.json").read_text())["pids"].values())
    except (OSError, ValueError, KeyError):
        pids = []
    if any(alive(int(pid)) for pid in [owner["pid"], *pids]):
        return None
    return state_dir


def acquire(state_dir: Path) -> Slot:
    """Take a free slot (tearing down one a killed run abandoned) and make its namespace, veth,
    host routes and cgroups."""
    check_host()
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in (Slot(i) for i in range(SLOTS)):
            if stale.netns_path.exists() and (gone := _abandoned(stale)) is not None:
                teardown(stale, gone)
        if not _active_slots() and not SYSCTL_SNAPSHOT.exists():
            SYSCTL_SNAPSHOT.write_text(json.dumps({k: _sysctl(k) for k in KUBELET_SYSCTLS}))
        taken = {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()
        free = [i for i in range(SLOTS) if Slot(i).netns not in taken]
        if not free:
            raise NodeHostError(f"all {SLOTS} real-node slots are in use ({NETNS_DIR})")
        slot = Slot(free[0])
        owner = {"pid": os.getpid(), "state_dir": str(state_dir)}
        owner_file(slot).write_text(json.dumps(owner))
        try:
            _make_network(slot)
            _make_cgroups(slot)
        except BaseException:
            teardown(slot)
            raise
    return slot


def _active_slots() -> list[Slot]:
    return [Slot(i) for i in range(SLOTS) if Slot(i).netns_path.exists()]


def _sysctl(key: str) -> str:
    return (Path("/proc/sys") / key.replace(".", "/")).read_text().strip()


def restore_host() -> dict[str, str]:
    """After the last node here went: the sysctls the kubelets changed, back to what they were
    before the first started; returns those it put back."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _active_slots() or not SYSCTL_SNAPSHOT.exists():
            return {}
        saved: dict[str, str] = json.loads(SYSCTL_SNAPSHOT.read_text())
        changed = {k: v for k, v in saved.items() if _sysctl(k) != v}
        for key, value in changed.items():
            (Path("/proc/sys") / key.replace(".", "/")).write_text(value)
        SYSCTL_SNAPSHOT.unlink()
        return changed


def _make_network(slot: Slot) -> None:
    peer = f"ks{slot.index}-n"
    _run("ip", "netns", "add", slot.netns)
    _run("ip", "link", "add", slot.host_if, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", slot.netns)
    _run("ip", "addr", "add", f"{slot.host_ip}/30", "dev", slot.host_if)
    _run("ip", "link", "set", slot.host_if, "up")
    inside = slot.in_netns
    _run(*inside("ip", "link", "set", peer, "name", "eth0"))
    _run(*inside("ip", "addr", "add", f"{slot.node_ip}/30", "dev", "eth0"))
    _run(*inside("ip", "link", "set", "eth0", "up"))
    _run(*inside("ip", "link", "set", "lo", "up"))
    _run(*inside("ip", "route", "add", "default", "via", slot.host_ip))
    # Routing between the veth and the pods' bridge; bridged pod traffic through iptables, so a
    # pod reaching a ClusterIP that lands on a pod of the same bridge is un-NATed on the way back.
    _run(*inside("sysctl", "-q", "-w", "net.ipv4.ip_forward=1"))
    _run(*inside("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"))
    for cidr in (slot.pod_cidr, slot.service_cidr):
        _run("ip", "route", "add", cidr, "via", slot.node_ip, "dev", slot.host_if)


def hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, named ones, the unified one)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            found.append(Path(fields[4]))
    return found


def _make_cgroups(slot: Slot) -> None:
    for h in hierarchies():
        for sub in (slot.cgroup, f"{slot.cgroup}/node"):
            path = h / sub
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until copied
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((path.parent / knob).read_text())


def join_node_cgroup(slot: Slot) -> None:
    """Move the calling process into the node's cgroups (a spawned child, before exec)."""
    for h in hierarchies():
        procs = h / slot.cgroup / "node" / "cgroup.procs"
        if procs.exists():
            procs.write_text(str(os.getpid()))


def cgroup_pids(slot: Slot) -> set[int]:
    pids: set[int] = set()
    for h in hierarchies():
        root = h / slot.cgroup
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroup(slot: Slot, timeout: float = 30.0) -> None:
    """SIGKILL every process left in the slot's cgroups (pods, shims, containerd) until none is."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(slot):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise NodeHostError(f"processes {sorted(pids)} outlived SIGKILL in {slot.cgroup}")
        time.sleep(0.1)


def mounts_under(*roots: Path) -> list[Path]:
    """Mount points at or below ``roots``, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if any(point == r or r in point.parents for r in roots):
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_under(*roots: Path) -> None:
    for _ in range(5):  # a bind mount may hide another at the same point
        points = mounts_under(*roots)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
    if left := mounts_under(*roots):
        raise NodeHostError(f"still mounted: {left}")


def remove_cgroups(slot: Slot) -> None:
    for h in hierarchies():
        root = h / slot.cgroup
        if not root.is_dir():
            continue
        for path in sorted(
            (p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            path.rmdir()
        root.rmdir()


def host_files(state_dir: Path) -> list[Path]:
    """This node's files at the fixed host paths: the kubelet's log links, the shims' sockets
    (each task's `address` file names its socket) and libcni's cached results (named after the
    sandbox)."""
    containerd = state_dir / "node" / "containerd"
    tasks = containerd / "state" / "io.containerd.runtime.v2.task" / "k8s.io"
    sandboxes = containerd / "root" / "io.containerd.grpc.v1.cri" / "sandboxes"
    found = log_links(state_dir)
    ids = set()
    for parent in (tasks, sandboxes):
        ids |= {d.name for d in parent.iterdir()} if parent.is_dir() else set()
    for task in tasks.iterdir() if tasks.is_dir() else []:
        with contextlib.suppress(OSError):
            socket = Path((task / "address").read_text().strip().removeprefix("unix://"))
            if socket.parent == SHIM_SOCKETS and socket.exists():
                found.append(socket)
    if CNI_RESULTS.is_dir():
        found += [f for f in CNI_RESULTS.iterdir() if any(f"-{i}-" in f.name for i in ids)]
    return found


def log_links(state_dir: Path) -> list[Path]:
    """The kubelet's /var/log/containers links into this node's pod logs (left by a kill)."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return []
    return [
        link
        for link in CONTAINER_LOG_LINKS.iterdir()
        if link.is_symlink() and Path(os.readlink(link)).is_relative_to(state_dir)
    ]


def teardown(slot: Slot, state_dir: Path | None = None) -> list[Path]:
    """Remove everything of ``slot``: processes in its cgroups, mounts under ``state_dir`` and its
    namespace, the namespace itself (with it the veth, the routes and every iptables rule made
    inside), the host side of the veth and the cgroups. Safe to repeat. Returns the files at
    fixed host paths it removed (found in the node's state, which the unmount takes away)."""
    kill_cgroup(slot)
    files = host_files(state_dir) if state_dir else []
    roots = [slot.netns_path] + ([state_dir] if state_dir else [])
    unmount_under(*roots)
    subprocess.run(["ip", "netns", "delete", slot.netns], capture_output=True)
    subprocess.run(["ip", "link", "delete", slot.host_if], capture_output=True)
    if slot.netns_path.exists():
        slot.netns_path.unlink()
    remove_cgroups(slot)
    for path in files:
        path.unlink(missing_ok=True)
    owner_file(slot).unlink(missing_ok=True)
    if not any(Slot(i).netns_path.exists() for i in range(SLOTS)):  # the last node here
        (KUBELET_DEVICE_PLUGINS / "kubelet.sock").unlink(missing_ok=True)
        for empty in (KUBELET_DEVICE_PLUGINS, KUBELET_DEVICE_PLUGINS.parent):
            with contextlib.suppress(OSError):
                empty.rmdir()
    return files


def leftovers(slot: Slot, state_dir: Path) -> list[str]:
    """What of ``slot`` is still on the host (empty after `teardown`): for `make down`'s checks
    and the tests'."""
    found = []
    if slot.netns_path.exists():
        found.append(f"netns {slot.netns_path}")
    if owner_file(slot).exists():
        found.append(f"file {owner_file(slot)}")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {slot.host_if}" for line in links.splitlines() if f" {slot.host_if}@" in line]
    routes = subprocess.run(["ip", "route", "show"], capture_output=True, text=True).stdout
    found += [f"route {r}" for r in routes.splitlines() if r.split()[0] in (slot.pod_cidr,
              slot.service_cidr)]  # fmt: skip
    found += [f"cgroup {h / slot.cgroup}" for h in hierarchies() if (h / slot.cgroup).exists()]
    found += [f"mount {p}" for p in mounts_under(state_dir, slot.netns_path)]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                zombie = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                if not zombie and f":/{slot.cgroup}/" in (proc / "cgroup").read_text():
                    found.append(f"process {proc.name}")
    if not _active_slots():  # the last node here: the kubelets' traces on the machine too
        found += [f"dir {KUBELET_DEVICE_PLUGINS}"] if KUBELET_DEVICE_PLUGINS.exists() else []
        found += [f"sysctls {SYSCTL_SNAPSHOT}"] if SYSCTL_SNAPSHOT.exists() else []
    return found + [f"file {path}" for path in host_files(state_dir)]


def host_iptables_chains() -> list[str]:
    """Chains kube-proxy or the CNI plugins would make, in the host's own tables (none: theirs
    live in the node's namespace)."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith((":KUBE-", ":CNI-"))]
