"""The local cluster's real node (cluster/node.py, cluster/node_host.py): a kubelet that runs
pods in containerd, reachable through the API server (`kubectl logs`, `exec`, `port-forward`),
kube-proxy serving ClusterIPs inside its namespace and to the host, and the label and taint that
keep KWOK's pods and the real node's apart (docs/development.md)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from typing import Any

from kube_cluster import (
    REAL_NODE_SCHEDULING,
    Cluster,
    NodeHandle,
    eventually,
    free_port,
)
from node import LABEL_KEY, LABEL_VALUE

# A pod of the runtime image that logs one JSON line per request and answers with its hostname.
SERVER = """
import http.server, json, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        print(json.dumps({"event": "request", "path": self.path}), flush=True)
        body = socket.gethostname().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
print(json.dumps({"event": "start", "port": 8080}), flush=True)
http.server.ThreadingHTTPServer(("", 8080), H).serve_forever()
"""


def server_pod(name: str, image: str, *, real: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "server",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", SERVER],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
            }
        ],
        "terminationGracePeriodSeconds": 1,
    }
    if real:
        spec.update(REAL_NODE_SCHEDULING)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


def pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def ready(cluster: Cluster, namespace: str, name: str) -> bool:
    conditions = pod(cluster, namespace, name).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def test_the_real_node_is_ready_labelled_and_tainted(
    cluster: Cluster, real_node: NodeHandle
) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    node = by_name[real_node.name]
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    taints = node["spec"].get("taints", [])
    print(f"real node {real_node.name}: {conditions}, {addresses}, taints {taints}")
    assert conditions["Ready"] == "True"
    assert addresses["InternalIP"] == real_node.ip
    assert node["metadata"]["labels"][LABEL_KEY] == LABEL_VALUE
    assert taints == [{"key": LABEL_KEY, "value": LABEL_VALUE, "effect": "NoSchedule"}]
    fakes = [n for name, n in by_name.items() if name != real_node.name]
    assert fakes and all(LABEL_KEY not in n["metadata"].get("labels", {}) for n in fakes)


def test_a_pod_on_the_real_node_answers_logs_exec_and_port_forward(
    cluster: Cluster, real_node: NodeHandle, namespace: str
) -> None:
    cluster.apply(server_pod("web", real_node.runtime_cpu), "-n", namespace)
    eventually(lambda: ready(cluster, namespace, "web"), "the pod Ready on the real node")
    seen = pod(cluster, namespace, "web")
    assert seen["spec"]["nodeName"] == real_node.name
    pod_ip = seen["status"]["podIP"]
    assert pod_ip.startswith(real_node.node.slot.pod_cidr.split(".0.0/")[0] + ".")

    # exec: a process in the container, in the node's cgroup tree (its cgroupRoot)
    cgroup = cluster.kubectl("exec", "web", "-n", namespace, "--", "cat", "/proc/1/cgroup")
    print(cgroup.stdout)
    assert f"/{real_node.node.slot.cgroup}/kubepods" in cgroup.stdout

    # port-forward: API server -> kubelet -> the pod's port, to a port on the host's loopback
    port = free_port()
    forward = subprocess.Popen(
        [str(cluster.bin / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "port-forward",
         "-n", namespace, "pod/web", f"{port}:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        assert f"127.0.0.1:{port}" in first, first
        assert http_get(f"http://127.0.0.1:{port}/through-port-forward") == "web"
    finally:
        forward.terminate()
        forward.wait(timeout=10)

    # logs: the JSON lines the container printed, the request above among them
    def logged() -> list[dict[str, Any]]:
        out = cluster.kubectl("logs", "web", "-n", namespace).stdout
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        return lines if {"event": "request", "path": "/through-port-forward"} in lines else []

    lines = eventually(logged, "the request in kubectl logs")
    print(f"kubectl logs: {lines}")
    assert lines[0] == {"event": "start", "port": 8080}


def test_a_cluster_ip_answers_from_the_host_the_namespace_and_a_pod(
    cluster: Cluster, real_node: NodeHandle, namespace: str
) -> None:
    cluster.apply(server_pod("svc-backend", real_node.runtime_cpu), "-n", namespace)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "backend"},
        "spec": {"selector": {"app": "svc-backend"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    cluster.apply(service, "-n", namespace)
    eventually(lambda: ready(cluster, namespace, "svc-backend"), "the backend pod Ready")
    ip = cluster.kubectl(
        "get", "service", "backend", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert ip.startswith(real_node.node.slot.service_cidr.split(".0.0/")[0] + ".")

    # From the host (routed through the veth; kube-proxy's rules DNAT it inside the namespace):
    # the endpoint is programmed a moment after the pod is Ready.
    def from_host() -> str | None:
        try:
            return http_get(f"http://{ip}/from-host")
        except OSError:
            return None

    assert eventually(from_host, "the ClusterIP from the host") == "svc-backend"
    # From inside the node's namespace
    inside = subprocess.run(
        real_node.in_netns("python3", "-c", "import urllib.request as u; print(u.urlopen("
                           f"'http://{ip}/from-netns', timeout=5).read().decode())"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert inside.stdout.strip() == "svc-backend", inside.stderr
    # From a pod: the `kubernetes` Service reaches the API server (401 without credentials
    # proves the TLS connection through the ClusterIP), and the backend by ClusterIP
    probe = (
        "import os, ssl, urllib.request as u, urllib.error as e\n"
        "host = os.environ['KUBERNETES_SERVICE_HOST']\n"
        "ctx = ssl.create_default_context(cafile="
        "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt')\n"
        "try:\n"
        "    u.urlopen(f'https://{host}/api', context=ctx, timeout=5)\n"
        "except e.HTTPError as err:\n"
        "    print(err.code)\n"
        f"print(u.urlopen('http://{ip}/from-pod', timeout=5).read().decode())\n"
    )
    out = cluster.kubectl("exec", "svc-backend", "-n", namespace, "--", "python3", "-c", probe)
    print(f"from a pod: {out.stdout.split()}")
    assert out.stdout.split() in (["401", "svc-backend"], ["403", "svc-backend"])


def test_pods_land_on_the_real_node_only_when_they_ask(
    cluster: Cluster, real_node: NodeHandle, namespace: str
) -> None:
    # Selecting the real node without tolerating its taint: never scheduled there.
    untolerated = server_pod("untolerated", real_node.runtime_cpu)
    del untolerated["spec"]["tolerations"]
    cluster.apply(untolerated, "-n", namespace)
    # A pod that asks for nothing: on a KWOK node, never on the real one.
    cluster.apply(server_pod("anywhere", real_node.runtime_cpu, real=False), "-n", namespace)

    def refused() -> str | None:
        events = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=untolerated,reason=FailedScheduling", "-o", "json",
        )  # fmt: skip
        messages = [e["message"] for e in json.loads(events.stdout)["items"]]
        # The real node is the only one the selector matches: its taint is what refuses it.
        return next((m for m in messages if "untolerated taint" in m), None)

    message = eventually(refused, "the scheduler refusing the untolerated pod")
    print(f"untolerated: {message}")
    assert not pod(cluster, namespace, "untolerated")["spec"].get("nodeName")
    node = eventually(
        lambda: pod(cluster, namespace, "anywhere")["spec"].get("nodeName"), "anywhere scheduled"
    )
    assert node != real_node.name and node.startswith("kwok-")


def test_the_node_has_what_a_real_kubelet_reports(cluster: Cluster, real_node: NodeHandle) -> None:
    """Capacity from the machine (not KWOK's fixed figures), and the pinned versions."""
    node = json.loads(cluster.kubectl("get", "node", real_node.name, "-o", "json").stdout)
    info = node["status"]["nodeInfo"]
    print(f"node info: {info}, capacity {node['status']['capacity']}")
    version = cluster.kubectl("version", "-o", "json").stdout
    assert info["kubeletVersion"] == json.loads(version)["serverVersion"]["gitVersion"]
    assert info["kubeProxyVersion"] in ("", info["kubeletVersion"])
    assert info["containerRuntimeVersion"].startswith("containerd://")
    assert int(node["status"]["capacity"]["cpu"]) == os.cpu_count()
