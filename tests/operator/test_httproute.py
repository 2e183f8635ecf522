"""The HTTPRoute builder (pure): valid for Gateway API's own CRD schema, and routing right when
several SpeechModels share a Gateway under Gateway API's precedence rules; the `Routed` verdict
from the route's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gateway_api_schema as gateway_api
import pytest
from kubescribe_operator import httproute
from kubescribe_operator.httproute import Backend
from kubescribe_operator.spec import SpeechModelSpec
from pydantic import ValidationError

UID = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"
Obj = dict[str, Any]


def spec(routed: bool = True, **routing: Any) -> SpeechModelSpec:
    body: Obj = {"model": {"uri": "s3://bucket/m", "version": "1.0.0"}}
    if routed:
        body["routing"] = {"parentRefs": [{"name": "speech"}], **routing}
    return SpeechModelSpec.model_validate(body)


def route(name: str = "demo", **routing: Any) -> Obj:
    built = httproute.build_for(name, "speech", UID, spec(**routing))
    assert built is not None
    return built


# ---------------------------------------------------------------------------- the object

SCENARIOS = {
    "own name only": {},
    "aliases and languages": {"names": ["support-es", "es-1"], "defaultForLanguages": ["es", "ca"]},
    "gateway elsewhere, one listener": {
        "parentRefs": [{"name": "shared", "namespace": "infra", "sectionName": "http", "port": 80}]
    },
    "two gateways": {"parentRefs": [{"name": "a"}, {"name": "b", "namespace": "infra"}]},
    "the most names and languages": {
        "names": [f"alias-{i}" for i in range(14)],
        "defaultForLanguages": [f"l{chr(97 + i)}" for i in range(16)],
    },
}


@pytest.mark.parametrize("routing", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_every_route_is_valid_for_gateway_apis_schema(routing: Obj) -> None:
    built = route(**routing)
    assert gateway_api.errors(built) == []
    rules = built["spec"]["rules"]
    assert len(rules) <= 16 and sum(len(r["matches"]) for r in rules) < 128
    # A rewriting rule has exactly one PathPrefix match (a CEL rule of the CRD).
    for rule in rules:
        if "filters" in rule:
            assert [m["path"]["type"] for m in rule["matches"]] == ["PathPrefix"]


def test_the_schema_check_itself_refuses_a_wrong_route() -> None:
    """(The validator is strict: a wrong type or an unknown field is found.)"""
    built = route()
    built["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    built["spec"]["rules"][0]["backendRefs"][0]["wieght"] = 1
    problems = gateway_api.errors(built)
    assert any("Prefix" in p for p in problems) and any("wieght" in p for p in problems)


def test_the_route_is_a_child_like_the_others() -> None:
    built = route()
    meta = built["metadata"]
    assert (built["apiVersion"], built["kind"]) == ("gateway.networking.k8s.io/v1", "HTTPRoute")
    assert (meta["name"], meta["namespace"]) == ("demo", "speech")
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "kubescribe-operator"
    assert built["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "speech"}
    ]


def test_no_routing_no_route() -> None:
    assert httproute.build_for("demo", "speech", UID, spec(routed=False)) is None


def test_every_rule_sends_to_the_weighted_backends() -> None:
    routing = spec(names=["support-es"]).routing
    assert routing is not None
    backends = [Backend("demo-stable", 8000, 90), Backend("demo-canary", 8000, 10)]
    built = httproute.build_httproute("demo", "speech", UID, routing, backends)
    for rule in built["spec"]["rules"]:
        assert rule["backendRefs"] == [
            {"name": "demo-stable", "port": 8000, "weight": 90},
            {"name": "demo-canary", "port": 8000, "weight": 10},
        ]
    assert gateway_api.errors(built) == []
    with pytest.raises(ValueError, match="at least one backend"):
        httproute.build_httproute("demo", "speech", UID, routing, [])


def test_the_default_backend_is_the_models_service_and_port() -> None:
    s = SpeechModelSpec.model_validate(
        {
            "model": {"uri": "s3://bucket/m", "version": "1"},
            "service": {"port": 9000},
            "routing": {"parentRefs": [{"name": "gw"}]},
        }
    )
    built = httproute.build_for("demo", "speech", UID, s)
    assert built is not None
    assert built["spec"]["rules"][0]["backendRefs"] == [{"name": "demo", "port": 9000, "weight": 1}]


def test_names_are_deduplicated_own_name_first() -> None:
    assert httproute.served_names("demo", spec(names=["a", "demo", "b"]).routing) == [
        "demo",
        "a",
        "b",
    ]
    assert httproute.served_names("demo", None) == ["demo"]


def test_the_spec_refuses_more_names_than_a_route_holds() -> None:
    with pytest.raises(ValidationError, match="at most 14"):
        spec(names=[f"alias-{i}" for i in range(15)])


# -------------------------------------------------- precedence across SpeechModels on a Gateway


@dataclass
class Request:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


def _path_matches(match: Obj, path: str) -> int | None:
    """The precedence of a path match for ``path`` (None: no match): exact above any prefix,
    then the longer prefix; prefixes match whole path elements."""
    kind, value = match["type"], match["value"]
    if kind == "Exact":
        return 10_000 if path == value else None
    stem = value.rstrip("/")
    if path == stem or path.startswith(stem + "/"):
        return len(stem)
    return None


def gateway(routes: list[Obj], req: Request) -> tuple[str, str] | None:
    """Which route (by name, the list is oldest first) gets ``req``, and the path it sends on,
    by Gateway API's precedence: exact path, longest prefix, most header matches, most query
    matches, then the oldest route and the first rule."""
    best: tuple[tuple[int, ...], str, str] | None = None
    for age, built in enumerate(routes):
        for index, rule in enumerate(built["spec"]["rules"]):
            for match in rule["matches"]:
                score = _path_matches(match["path"], req.path)
                headers = match.get("headers", [])
                params = match.get("queryParams", [])
                if score is None:
                    continue
                if any(req.headers.get(h["name"]) != h["value"] for h in headers):
                    continue
                if any(req.query.get(q["name"]) != q["value"] for q in params):
                    continue
                key = (score, len(headers), len(params), -age, -index)
                path = req.path
                for f in rule.get("filters", []):
                    stem = match["path"]["value"].rstrip("/")
                    path = "/" + req.path[len(stem) :].lstrip("/")
                    assert f["urlRewrite"]["path"]["replacePrefixMatch"] == "/"
                if best is None or key > best[0]:
                    best = (key, built["metadata"]["name"], path)
    return None if best is None else (best[1], best[2])


TRANSCRIBE = "/v1/audio/transcriptions"
# The English demo (created first) and the Spanish one, on one Gateway.
LINE = [
    route("demo"),
    route("demo-es", names=["support-es"], defaultForLanguages=["es"]),
]
ROUTING = {
    "model header: alias": (
        Request(TRANSCRIBE, {"x-kubescribe-model": "support-es"}),
        ("demo-es", TRANSCRIBE),
    ),
    "model header: metadata.name": (
        Request(TRANSCRIBE, {"x-kubescribe-model": "demo-es"}),
        ("demo-es", TRANSCRIBE),
    ),
    "model header: the English one": (
        Request(TRANSCRIBE, {"x-kubescribe-model": "demo"}),
        ("demo", TRANSCRIBE),
    ),
    "realtime ?model=": (
        Request("/v1/realtime", query={"model": "support-es", "intent": "transcription"}),
        ("demo-es", "/v1/realtime"),
    ),
    "realtime ?model= wins over another model's header": (
        Request("/v1/realtime", {"x-kubescribe-model": "demo"}, {"model": "support-es"}),
        ("demo-es", "/v1/realtime"),
    ),
    "path prefix, rewritten": (
        Request("/models/support-es/v1/audio/transcriptions"),
        ("demo-es", TRANSCRIBE),
    ),
    "path prefix, the English one": (
        Request("/models/demo/v1/realtime", query={"intent": "transcription"}),
        ("demo", "/v1/realtime"),
    ),
    "language default": (
        Request(TRANSCRIBE, {"x-kubescribe-language": "es"}),
        ("demo-es", TRANSCRIBE),
    ),
    "a language nobody defaults for: the catch-all": (
        Request(TRANSCRIBE, {"x-kubescribe-language": "fr"}),
        ("demo", TRANSCRIBE),
    ),
    "unknown model: a runtime answers (its 404), not the gateway": (
        Request(TRANSCRIBE, {"x-kubescribe-model": "whisper-1"}),
        ("demo", TRANSCRIBE),
    ),
    "the models list: any runtime (they answer the same)": (
        Request("/v1/models", {"x-kubescribe-model": "support-es"}),
        ("demo", "/v1/models"),
    ),
    "one model's card: any runtime": (
        Request("/v1/models/support-es"),
        ("demo", "/v1/models/support-es"),
    ),
}


@pytest.mark.parametrize("req, expected", ROUTING.values(), ids=ROUTING.keys())
def test_requests_reach_the_right_model_on_a_shared_gateway(
    req: Request, expected: tuple[str, str]
) -> None:
    assert gateway(LINE, req) == expected
    # The order the routes were created in decides only ties that any runtime answers alike.
    reverse = gateway(list(reversed(LINE)), req)
    assert reverse is not None
    if "any runtime" in str(expected) or req.path == "/v1/models" or expected[0] == "demo":
        assert reverse[1] == expected[1]
    else:
        assert reverse == expected


def test_prefix_matches_whole_path_elements() -> None:
    # /models/demo must not take /models/demo-es/...
    assert gateway(LINE, Request("/models/demo-es/v1/models")) == ("demo-es", "/v1/models")
    assert gateway(LINE, Request("/v2/other")) is None


# ------------------------------------------------------------------------------ status


def status(*parents: Obj) -> Obj:
    return {"status": {"parents": list(parents)}}


def parent(name: str, *conditions: tuple[str, str, str], namespace: str | None = None) -> Obj:
    ref: Obj = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name}
    if namespace:
        ref["namespace"] = namespace
    return {
        "parentRef": ref,
        "controllerName": "example.com/gw",
        "conditions": [
            {"type": t, "status": s, "reason": r, "message": f"{t} says {r}"}
            for t, s, r in conditions
        ],
    }


ACCEPTED = ("Accepted", "True", "Accepted")
RESOLVED = ("ResolvedRefs", "True", "ResolvedRefs")
HEALTH = {
    "accepted and resolved": (
        status(parent("speech", ACCEPTED, RESOLVED)),
        (),
        (True, "Accepted", "routed by Gateway speech/speech"),
    ),
    "not accepted: the gateway's reason and message": (
        status(parent("speech", ("Accepted", "False", "NotAllowedByListeners"), RESOLVED)),
        (),
        (False, "NotAllowedByListeners", "Accepted says NotAllowedByListeners"),
    ),
    "a backend not resolved": (
        status(parent("speech", ACCEPTED, ("ResolvedRefs", "False", "BackendNotFound"))),
        (),
        (False, "BackendNotFound", "ResolvedRefs=False BackendNotFound"),
    ),
    "no controller reported yet": (None, (), (False, "NotYetAccepted", "no gateway controller")),
    "the gateway does not exist": (
        {},
        (("speech", "speech"),),
        (False, "GatewayNotFound", "Gateway speech/speech does not exist"),
    ),
    "another route's parent is not ours": (
        status(parent("speech", ACCEPTED, RESOLVED, namespace="other")),
        (),
        (False, "NotYetAccepted", "speech/speech"),
    ),
    "accepted, ResolvedRefs not reported yet": (
        status(parent("speech", ACCEPTED)),
        (),
        (False, "NotResolvedRefs", "not reported yet"),
    ),
}


@pytest.mark.parametrize("route_obj, missing, expected", HEALTH.values(), ids=HEALTH.keys())
def test_routed_verdict_from_the_routes_status(
    route_obj: Obj | None, missing: tuple[tuple[str, str], ...], expected: tuple[bool, str, str]
) -> None:
    routing = spec().routing
    assert routing is not None
    health = httproute.route_health(route_obj, routing, "speech", missing)
    assert (health.routed, health.reason) == expected[:2]
    assert expected[2] in health.message


def test_every_parent_must_route() -> None:
    routing = spec(parentRefs=[{"name": "a"}, {"name": "b", "namespace": "infra"}]).routing
    assert routing is not None
    one = status(parent("a", ACCEPTED, RESOLVED))
    health = httproute.route_health(one, routing, "speech")
    assert not health.routed and "Gateway infra/b" in health.message
    both = status(
        parent("a", ACCEPTED, RESOLVED), parent("b", ACCEPTED, RESOLVED, namespace="infra")
    )
    assert httproute.route_health(both, routing, "speech").routed
