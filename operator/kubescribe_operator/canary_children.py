"""The canary's children and how stable and canary share replicas and traffic. Pure.

    share(stable_replicas, weight, routed) -> Share
    canary_children(children, name, namespace, uid, spec, plan) -> children
    backends(name, spec, plan) -> [httproute.Backend]     (the HTTPRoute's backendRefs)

A canary runs as a second Deployment, `<name>-canary`, built by the same pod template builder as
the stable one (`<name>`), with the canary's model and the label `kubescribe.io/track: canary`.

How traffic is shared:
- With `spec.routing` (mode Route) the HTTPRoute sends `weight` percent to the Service
  `<name>-canary` and the rest to `<name>-stable` (each selects its track; the stable pods carry
  `kubescribe.io/track: stable` while the strategy is Canary, so turning the strategy on rolls the
  stable pods once). The main Service `<name>` selects every pod of the model, both tracks, so
  in-cluster clients keep working and get the replica share.
- Without a route (mode ReplicaShare) the one Service spreads requests over all ready pods, so the
  canary's share is its share of the pods: `c / (stable + c)`; the status says so and gives the
  share as deployed (`effectiveWeight`), which is coarse with few replicas (1 canary beside 2
  stable pods is 33 %, whatever the step asks).

How replicas are shared (never a fight with the HPA): the stable Deployment keeps its replicas
exactly as before — `spec.replicas`, or with autoscaling whatever the HPA sets (the operator never
owns that field then). The canary has no HPA; its replicas follow from the weight and the stable
Deployment's current replica count `S`, recomputed on every reconcile:
- Route: `ceil(S * weight / 100)`, at least 1 (enough capacity for its share of the traffic);
- ReplicaShare: `round(S * weight / (100 - weight))`, at least 1 (so that `c / (S + c)` is
  nearest the weight), `S` at weight 100.
The canary's pods come on top of the stable ones (as a rolling update's surge does).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from kubescribe_operator.api import ModelRef
from kubescribe_operator.httproute import KIND as HTTPROUTE
from kubescribe_operator.httproute import Backend, backend_refs
from kubescribe_operator.naming import selector_labels
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]

LABEL_TRACK = "kubescribe.io/track"
CANARY_SUFFIX = "-canary"
STABLE_SUFFIX = "-stable"


def canary_name(name: str) -> str:
    return f"{name}{CANARY_SUFFIX}"


def stable_name(name: str) -> str:
    return f"{name}{STABLE_SUFFIX}"


@dataclass(frozen=True)
class Share:
    canary_replicas: int
    effective_weight: int  # percent of the traffic the canary gets as deployed


def share(stable_replicas: int, weight: int, routed: bool) -> Share:
    """The canary's replicas beside `stable_replicas` stable ones, at `weight` percent."""
    stable = max(stable_replicas, 0)
    if weight <= 0:
        return Share(0, 0)
    if routed:
        return Share(max(1, math.ceil(stable * weight / 100)), weight)
    canary = stable if weight >= 100 else max(1, round(stable * weight / (100 - weight)))
    total = stable + canary
    return Share(canary, round(100 * canary / total) if total else 0)


@dataclass(frozen=True)
class CanaryPlan:
    """What the children must be while a canary runs (None of it without a canary)."""

    ref: ModelRef  # the canary's model
    replicas: int
    weight: int  # the HTTPRoute weight of the canary backend (Route mode)
    routed: bool


def _with_track(template: Obj, track: str) -> Obj:
    out = copy.deepcopy(template)
    out["metadata"]["labels"] = {**out["metadata"].get("labels", {}), LABEL_TRACK: track}
    return out


def _canary_deployment(built: Obj, name: str, plan: CanaryPlan) -> Obj:
    """The canary Deployment from a Deployment built for the canary's model (same builder)."""
    deployment = copy.deepcopy(built)
    deployment["metadata"]["name"] = canary_name(name)
    rest = {k: v for k, v in deployment["spec"].items() if k != "replicas"}
    deployment["spec"] = {
        "replicas": plan.replicas,  # no HPA on the canary: the operator owns its replicas
        **rest,
        "selector": {"matchLabels": {**selector_labels(name), LABEL_TRACK: "canary"}},
        "template": _with_track(rest["template"], "canary"),
    }
    return deployment


def _track_service(service: Obj, name: str, track: str) -> Obj:
    """A ClusterIP Service for one track, for the HTTPRoute's backendRefs."""
    out = copy.deepcopy(service)
    out["metadata"]["name"] = canary_name(name) if track == "canary" else stable_name(name)
    out["metadata"].pop("annotations", None)
    out["spec"]["type"] = "ClusterIP"
    out["spec"]["selector"] = {**selector_labels(name), LABEL_TRACK: track}
    return out


def canary_children(
    children: list[Obj],
    canary_deployment: Obj | None,
    name: str,
    spec: SpeechModelSpec,
    plan: CanaryPlan | None,
) -> list[Obj]:
    """`children` (as `builders.build_children` made them for the stable model) with the
    canary's: the stable pods labelled by track, the track Services and the HTTPRoute's weighted
    backendRefs (Route mode, for as long as the strategy is Canary), and the canary Deployment
    while a canary runs (`canary_deployment`: what `build_deployment` makes for the canary's
    model).
    Without the Canary strategy the children are returned unchanged."""
    if spec.rollout.strategy != "Canary":
        return children
    routed = spec.routing is not None
    out: list[Obj] = []
    for child in children:
        if child["kind"] == "Deployment" and child["metadata"]["name"] == name:
            if routed:
                child = copy.deepcopy(child)
                child["spec"]["template"] = _with_track(child["spec"]["template"], "stable")
            out.append(child)
            if plan is not None and canary_deployment is not None:
                out.append(_canary_deployment(canary_deployment, name, plan))
        elif child["kind"] == "Service" and child["metadata"]["name"] == name:
            out.append(child)
            if routed:
                out.append(_track_service(child, name, "stable"))
                out.append(_track_service(child, name, "canary"))
        elif child["kind"] == HTTPROUTE and child["metadata"]["name"] == name:
            out.append(_weighted(child, backend_refs(backends(name, spec, plan))))
        else:
            out.append(child)
    return out


def backends(name: str, spec: SpeechModelSpec, plan: CanaryPlan | None) -> list[Backend]:
    """The HTTPRoute's backendRefs. Without the Canary strategy: the model's Service. With it:
    the stable and canary Services, the canary at the step's weight (0 when no canary runs, so
    the route keeps its shape between canaries)."""
    port = spec.service.port
    if spec.rollout.strategy != "Canary" or spec.routing is None:
        return [Backend(name, port, 1)]
    weight = plan.weight if plan is not None and plan.routed else 0
    return [
        Backend(stable_name(name), port, 100 - weight),
        Backend(canary_name(name), port, weight),
    ]


def _weighted(route: Obj, refs: list[Obj]) -> Obj:
    out = copy.deepcopy(route)
    for rule in out["spec"]["rules"]:
        rule["backendRefs"] = copy.deepcopy(refs)
    return out
