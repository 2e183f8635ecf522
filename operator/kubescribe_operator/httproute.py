"""The HTTPRoute of a routed SpeechModel (`spec.routing`), and what its status says. Pure.

One standard Gateway API ``gateway.networking.k8s.io/v1`` HTTPRoute per SpeechModel, named like
it, with the labels and ownerReference of its other children, attached to the Gateways of
``spec.routing.parentRefs``. Several SpeechModels share a Gateway; Gateway API's precedence
(exact path > longest prefix > most header matches > most query matches, then the oldest route)
sends each request to the right one:

==========================================  ====================================================
match                                       who sends it
==========================================  ====================================================
PathPrefix ``/v1/`` + header                the client (``default_headers``), or a body-to-header
``x-kubescribe-model: <name>``              filter from the multipart ``model`` field
PathPrefix ``/v1/realtime`` + query         ``realtime.connect(model=...)`` (``?model=``)
``model=<name>``
PathPrefix ``/models/<name>``, rewritten    ``base_url=http://gw/models/<name>/v1``
to ``/``
PathPrefix ``/v1/`` + header                ``defaultForLanguages``: a request naming no model,
``x-kubescribe-language: <lang>``           its ``language`` put in the header by a filter
Exact ``/v1/models``                        ``models.list()``: every runtime on the Gateway
                                            answers the same list (the catalogue)
PathPrefix ``/v1/``                         anything else, e.g. an unknown model: a runtime
                                            answers its OpenAI-shaped 404, not the gateway
==========================================  ====================================================

The names are ``metadata.name`` and ``spec.routing.names``. Every rule sends to the same
``backendRefs``, built from ``[Backend(service, port, weight)]`` so that a canary can weight
them. An HTTPRoute holds at most 16 rules, and a rewriting rule exactly one match, so the
matches that do not rewrite share one rule (at most 64 matches) and each name has its own
rewriting rule (hence at most 14 ``names``: ``spec_traffic``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubescribe_operator.naming import child_metadata
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.spec_traffic import RoutingSpec

Obj = dict[str, Any]

GATEWAY_GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GATEWAY_GROUP}/v1"
KIND = "HTTPRoute"
MODEL_HEADER = "x-kubescribe-model"
LANGUAGE_HEADER = "x-kubescribe-language"
API_PREFIX = "/v1/"
REALTIME_PATH = "/v1/realtime"
MODELS_PATH = "/v1/models"
NAMED_PREFIX = "/models/"
# Gateway API's limits on one HTTPRoute (its CRD's schema and CEL rules).
MAX_RULES = 16
MAX_MATCHES_PER_RULE = 64
MAX_MATCHES = 128


@dataclass(frozen=True)
class Backend:
    """A Service the route sends to, and its share (Gateway API weights are relative)."""

    service: str
    port: int
    weight: int = 1


def served_names(name: str, routing: RoutingSpec | None) -> list[str]:
    """The names clients may put in ``model`` for this SpeechModel: its own name first."""
    names = [name]
    for alias in routing.names if routing is not None else ():
        if alias not in names:
            names.append(alias)
    return names


def _parent_ref(ref: Any) -> Obj:
    out: Obj = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def _prefix(path: str) -> Obj:
    return {"type": "PathPrefix", "value": path}


def _header(header: str, value: str) -> Obj:
    return {
        "path": _prefix(API_PREFIX),
        "headers": [{"type": "Exact", "name": header, "value": value}],
    }


def selecting_matches(names: Sequence[str], languages: Sequence[str]) -> list[Obj]:
    """The matches that send a request here as it is (no rewrite), most specific first."""
    by_model = [_header(MODEL_HEADER, n) for n in names]
    realtime = [
        {
            "path": _prefix(REALTIME_PATH),
            "queryParams": [{"type": "Exact", "name": "model", "value": n}],
        }
        for n in names
    ]
    by_language = [_header(LANGUAGE_HEADER, lang) for lang in languages]
    models = [{"path": {"type": "Exact", "value": MODELS_PATH}}]
    catch_all = [{"path": _prefix(API_PREFIX)}]
    return [*by_model, *realtime, *by_language, *models, *catch_all]


def backend_refs(backends: Sequence[Backend]) -> list[Obj]:
    if not backends:
        raise ValueError("an HTTPRoute needs at least one backend")
    return [{"name": b.service, "port": b.port, "weight": b.weight} for b in backends]


def build_httproute(
    name: str,
    namespace: str,
    uid: str,
    routing: RoutingSpec,
    backends: Sequence[Backend],
) -> Obj:
    """The HTTPRoute of SpeechModel ``name`` sending to ``backends``."""
    names = served_names(name, routing)
    refs = backend_refs(backends)
    rules: list[Obj] = [
        {"matches": selecting_matches(names, routing.default_for_languages), "backendRefs": refs}
    ]
    for n in names:
        rules.append(
            {
                "matches": [{"path": _prefix(f"{NAMED_PREFIX}{n}")}],
                "filters": [
                    {
                        "type": "URLRewrite",
                        "urlRewrite": {
                            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
                        },
                    }
                ],
                "backendRefs": refs,
            }
        )
    matches = [len(rule["matches"]) for rule in rules]
    if len(rules) > MAX_RULES or max(matches) > MAX_MATCHES_PER_RULE or sum(matches) > MAX_MATCHES:
        # The spec's limits keep every route within Gateway API's; this guards a change there.
        raise ValueError(f"HTTPRoute {namespace}/{name} would exceed Gateway API's limits")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(name, namespace, uid),
        "spec": {
            "parentRefs": [_parent_ref(ref) for ref in routing.parent_refs],
            "rules": rules,
        },
    }


def default_backends(name: str, spec: SpeechModelSpec) -> list[Backend]:
    """All traffic to the model's own Service (no canary)."""
    return [Backend(name, spec.service.port, 1)]


def build_for(name: str, namespace: str, uid: str, spec: SpeechModelSpec) -> Obj | None:
    """The SpeechModel's HTTPRoute to its own Service, None without ``spec.routing``."""
    if spec.routing is None:
        return None
    return build_httproute(name, namespace, uid, spec.routing, default_backends(name, spec))


# ------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class RouteHealth:
    """What the `Routed` condition says: routed (True/False), a reason and a message."""

    routed: bool
    reason: str
    message: str


# The route conditions a Gateway must report True for a parent to route it.
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")
MESSAGE_LIMIT = 400


def short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def parent_key(ref: Mapping[str, Any], route_namespace: str) -> tuple[str, str, str]:
    """(namespace, name, sectionName) of a parentRef, the route's namespace by default."""
    return (
        str(ref.get("namespace") or route_namespace),
        str(ref.get("name")),
        str(ref.get("sectionName") or ""),
    )


def route_health(
    route: Mapping[str, Any] | None,
    routing: RoutingSpec,
    namespace: str,
    missing_gateways: Sequence[tuple[str, str]] = (),
) -> RouteHealth:
    """The `Routed` verdict from the HTTPRoute's ``status.parents[].conditions`` (written by
    each Gateway's controller), one line per parentRef. ``missing_gateways``: the parents
    known not to exist ((namespace, name)), for those no controller reports on."""
    parents: Sequence[Mapping[str, Any]] = ((route or {}).get("status") or {}).get("parents") or []
    reported = {parent_key(p.get("parentRef") or {}, namespace): p for p in parents}
    problems: list[tuple[str, str]] = []
    fine: list[str] = []
    for ref in routing.parent_refs:
        key = (ref.namespace or namespace, ref.name, ref.section_name or "")
        where = f"Gateway {key[0]}/{key[1]}" + (f" ({key[2]})" if key[2] else "")
        entry = reported.get(key)
        if entry is None:
            if (key[0], key[1]) in missing_gateways:
                problems.append(("GatewayNotFound", f"{where} does not exist"))
            else:
                problems.append(
                    (
                        "NotYetAccepted",
                        f"{where}: no gateway controller has reported on the route yet (is its "
                        "GatewayClass's controller running?)",
                    )
                )
            continue
        by_type = {str(c.get("type")): c for c in entry.get("conditions") or []}
        failing = [t for t in ROUTE_CONDITIONS if (by_type.get(t) or {}).get("status") != "True"]
        if not failing:
            fine.append(where)
            continue
        ctype = failing[0]
        condition = by_type.get(ctype)
        if condition is None:
            problems.append((f"Not{ctype}", f"{where}: {ctype} not reported yet"))
            continue
        reason = str(condition.get("reason") or f"Not{ctype}")
        detail = str(condition.get("message") or "")
        text = f"{where}: {ctype}={condition.get('status')} {reason}"
        problems.append((reason, f"{text}: {detail}" if detail else text))
    if problems:
        return RouteHealth(False, problems[0][0], short("; ".join(text for _, text in problems)))
    return RouteHealth(True, "Accepted", short(f"routed by {', '.join(fine)}"))
