"""One real node beside the KWOK ones: containerd + runc (Debian), kubelet and kube-proxy (built by
cluster/build.sh from the pinned release), all inside the slot's network namespace (node_host.py).

The kubelet authenticates with a client certificate from the cluster's CA (system:node:<name>,
authorised by the Node authoriser) and serves with a certificate the API server checks against
the same CA; its own API takes webhook authentication and authorisation, so `kubectl logs`,
`exec` and `port-forward` go API server -> kubelet as they do on any cluster. kube-proxy runs in
iptables mode. Pods are chosen for this node by the label and taint below (docs/development.md);
the KWOK nodes carry neither, so a pod lands here only if it asks to.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from node_host import Slot
from pki import CLIENT, Pki, sign

NODE_NAME = "real-0"
LABEL_KEY, LABEL_VALUE = "kubescribe.io/node", "real"
TAINT = f"{LABEL_KEY}={LABEL_VALUE}:NoSchedule"
PACKAGES = {  # program -> Debian package (make node-tools)
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
}
CNI_BIN = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
TMPFS_SIZE = "8g"  # a limit, not a reservation: the runtime image unpacked takes about 1 GB


class NodeError(RuntimeError):
    """The real node could not be set up or did not come up."""


@dataclass(frozen=True)
class NodeImages:
    """OCI archives to import into the node's containerd, and the sandbox (pause) image."""

    archives: tuple[Path, ...]
    pause: str


def missing_programs(bin_dir: Path) -> list[str]:
    """What the node needs and this machine lacks, as a `make` target would fix it."""
    missing = [f"{p} (make cluster-build)" for p in ("kubelet", "kube-proxy")
               if not (bin_dir / p).exists()]  # fmt: skip
    missing += [f"{p} (make node-tools)" for p in PACKAGES if shutil.which(p) is None]
    missing += [f"CNI {p} (make node-tools)" for p in CNI_PLUGINS if not (CNI_BIN / p).exists()]
    return missing


class RealNode:
    """The node's files live under ``dir``; processes are started by ``spawn(name, argv)``, which
    puts them in the node's cgroup and records their PIDs with the cluster's."""

    def __init__(self, slot: Slot, dir: Path, bin_dir: Path, pki: Pki) -> None:
        self.slot, self.dir, self.bin, self.pki = slot, dir, bin_dir, pki

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def pod_logs(self) -> Path:
        return self.dir / "pod-logs"

    # ---------------------------------------------------------- certificates
    def certificates(self) -> None:
        """The kubelet's client and serving certificates, kube-proxy's, and the API server's
        client certificate for the kubelet API."""
        self.dir.mkdir(parents=True, exist_ok=True)
        sign(self.pki, "kubelet", f"/O=system:nodes/CN=system:node:{NODE_NAME}", CLIENT)
        sign(
            self.pki,
            "kubelet-serving",
            f"/CN={NODE_NAME}",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{self.slot.node_ip},"
            f"DNS:{NODE_NAME}\n",
        )
        sign(self.pki, "kube-proxy", "/CN=system:kube-proxy", CLIENT)
        subject = "/O=system:masters/CN=kube-apiserver-kubelet-client"
        sign(self.pki, "apiserver-kubelet-client", subject, CLIENT)

    def apiserver_args(self) -> list[str]:
        d = self.pki.dir
        return [
            f"--kubelet-certificate-authority={self.pki.ca_cert}",
            f"--kubelet-client-certificate={d / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={d / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    # ----------------------------------------------------------------- start
    def start(
        self,
        spawn: Callable[[str, Sequence[str]], None],
        write_kubeconfig: Callable[[Path, str, dict[str, str]], Path],
        images: NodeImages,
        wait: Callable[[Callable[[], bool], str], None],
    ) -> None:
        d, pki = self.dir, self.pki.dir
        # Images unpack here and pods write here: a tmpfs is unmounted at once by teardown,
        # where removing an unpacked image from disk file by file took 25 s on a loaded machine.
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"mode=0755,size={TMPFS_SIZE}", "tmpfs", str(d)],
            check=True,
        )
        for sub in ("containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(self._containerd_config(images.pause))
        (d / "cni" / "net.d" / "10-kubescribe.conflist").write_text(self._cni_config())
        kubelet_kc = write_kubeconfig(
            d / "kubelet.kubeconfig", f"system:node:{NODE_NAME}",
            {"client-certificate": str(pki / "kubelet.crt"),
             "client-key": str(pki / "kubelet.key")},
        )  # fmt: skip
        proxy_kc = write_kubeconfig(
            d / "kube-proxy.kubeconfig", "system:kube-proxy",
            {"client-certificate": str(pki / "kube-proxy.crt"),
             "client-key": str(pki / "kube-proxy.key")},
        )  # fmt: skip
        (d / "kubelet.yaml").write_text(json.dumps(self._kubelet_config(), indent=1))

        inside = self.slot.in_netns
        spawn("containerd", inside("containerd", "--config", str(d / "containerd" / "config.toml")))
        wait(self._containerd_ready, "containerd")
        for archive in images.archives:
            self._ctr("images", "import", str(archive))
        spawn("kubelet", inside(
            str(self.bin / "kubelet"), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={kubelet_kc}", f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.slot.node_ip}", f"--root-dir={d / 'kubelet'}",
            f"--node-labels={LABEL_KEY}={LABEL_VALUE}", "--v=1",
        ))  # fmt: skip
        spawn("kube-proxy", inside(
            str(self.bin / "kube-proxy"), f"--kubeconfig={proxy_kc}", "--proxy-mode=iptables",
            f"--hostname-override={NODE_NAME}", f"--cluster-cidr={self.slot.pod_cidr}",
            "--healthz-bind-address=127.0.0.1:10256", "--metrics-bind-address=127.0.0.1:10249",
            "--conntrack-max-per-core=0", "--conntrack-min=0",
            "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
            "--iptables-localhost-nodeports=false", "--v=1",
        ))  # fmt: skip

    def _ctr(self, *args: str) -> str:
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def _containerd_ready(self) -> bool:
        if not self.socket.exists():
            return False
        out = subprocess.run(
            ["ctr", "--address", str(self.socket), "version"], capture_output=True, text=True
        )
        return out.returncode == 0

    def images(self) -> list[str]:
        return self._ctr("images", "list", "-q").split()

    # --------------------------------------------------------------- configs
    def _containerd_config(self, pause: str) -> str:
        d = self.dir
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{d / "containerd" / "root"}"
state = "{d / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{d / "containerd" / "ttrpc.sock"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "containerd" / "opt"}"
[{cri}]
  sandbox_image = "{pause}"
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE ("can't get final child's PID")
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true  # pods' namespaces under state/, not /run/netns
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{d / "containerd" / "runc"}"
[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{d / "cni" / "net.d"}"
"""

    def _cni_config(self) -> str:
        bridge = {
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.slot.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": str(self.dir / "cni" / "ipam"),
            },
        }
        portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
        conf = {"cniVersion": "0.4.0", "name": "kubescribe", "plugins": [bridge, portmap]}
        return json.dumps(conf, indent=1)

    def _kubelet_config(self) -> dict[str, object]:
        pki = self.pki.dir
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this machine has cgroup v1 (kubelet >= 1.35 refuses it)
            "cgroupDriver": "cgroupfs",  # no systemd
            "cgroupRoot": f"/{self.slot.cgroup}",  # per cluster: two never share pod cgroups
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": self.slot.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "registerWithTaints": [
                {"key": LABEL_KEY, "value": LABEL_VALUE, "effect": "NoSchedule"}
            ],
            "podLogsDir": str(self.pod_logs),
            # A shared CI disk must not make the node evict pods or remove the imported images.
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "maxPods": 40,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "10s",
        }  # fmt: skip
