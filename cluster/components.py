"""The command line of each control-plane program, from the cluster's ports, paths and
certificates (cluster/local_cluster.py starts them)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local_cluster import LocalCluster

HERE = Path(__file__).resolve().parent
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.1/16"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_args(c: LocalCluster) -> list[str]:
    assert c.state is not None
    client = f"http://127.0.0.1:{c.state.etcd_port}"
    peer = f"http://127.0.0.1:{c.state.etcd_peer_port}"
    return [
        "--name=local",
        f"--data-dir={c.dir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(c: LocalCluster) -> list[str]:
    assert c.state is not None
    pki, node = c.pki, c.node
    return [
        f"--etcd-servers=http://127.0.0.1:{c.state.etcd_port}",
        # Loopback, or with a real node the host side of its veth: the node and its pods
        # (through the `kubernetes` Service, whose endpoint is this address) reach it there.
        f"--bind-address={c.state.api_host}",
        f"--advertise-address={c.state.api_host}",
        f"--secure-port={c.state.api_port}",
        f"--tls-cert-file={pki.server_cert}",
        f"--tls-private-key-file={pki.server_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.sa_pub}",
        f"--service-account-signing-key-file={pki.sa_key}",
        f"--service-cluster-ip-range={node.slot.service_cidr if node else SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=OwnerReferencesPermissionEnforcement,NodeRestriction",
        # A loopback address cannot be an endpoint; the veth's can.
        *(node.apiserver_args() if node else ["--endpoint-reconciler-type=none"]),
        "--allow-privileged=true",
        f"--audit-policy-file={HERE / 'audit-policy.yaml'}",
        f"--audit-log-path={c.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",
        "--profiling=false",
        "--v=0",
    ]


def component_args(c: LocalCluster) -> list[str]:
    """What controller-manager and scheduler share: admin credentials, one instance, no
    serving port of their own."""
    return [
        f"--kubeconfig={c.kubeconfig}",
        f"--authentication-kubeconfig={c.kubeconfig}",
        f"--authorization-kubeconfig={c.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
    ]


def controller_manager_args(c: LocalCluster) -> list[str]:
    return [
        *component_args(c),
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-account-private-key-file={c.pki.sa_key}",
        f"--root-ca-file={c.pki.ca_cert}",
        f"--cluster-signing-cert-file={c.pki.ca_cert}",
        f"--cluster-signing-key-file={c.pki.ca_key}",
        "--horizontal-pod-autoscaler-sync-period=5s",
        "--concurrent-deployment-syncs=10",
        "--concurrent-replicaset-syncs=10",
        "--concurrent-gc-syncs=20",
    ]


def scheduler_args(c: LocalCluster) -> list[str]:
    return component_args(c)


def kwok_args(c: LocalCluster) -> list[str]:
    return [
        f"--kubeconfig={c.kubeconfig}",
        f"--config={HERE / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
        f"--server-address=127.0.0.1:{free_port()}",
    ]
