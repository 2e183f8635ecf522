"""The canary's edge, for the handlers: which watched objects are the canary's, and a step's
analysis read from the canary pods' own metrics (or the Prometheus the spec names).

    split(snap, uid) -> (stable, canary)        each (deployment, replicasets, pods) for observe()
    analyse(spec, namespace, pods, now) -> canary.Analysis

A step is judged on everything the canary's pods counted since they started
(`canary_analysis.judge` from an empty sample), not only since the step began: the canary's pods
are new with the canary, its traffic only grows from step to step, and nothing has to be kept
between reconciles, so an operator restarted mid-step judges the same figures. Metrics that
cannot be read are no verdict (`ok=None`): the step holds and its status says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kubescribe_operator import canary_analysis, canary_metrics
from kubescribe_operator.cache import Snapshot
from kubescribe_operator.canary import Analysis
from kubescribe_operator.canary_children import LABEL_TRACK, canary_name
from kubescribe_operator.pod import HTTP_PORT
from kubescribe_operator.spec import SpeechModelSpec

Obj = dict[str, Any]
Observable = tuple[Obj | None, list[Obj], list[Obj]]


def is_canary(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_TRACK) == "canary"


def _deployment(snap: Snapshot, uid: str, name: str, pods: list[Obj]) -> Observable:
    found = next((d for d in snap.owned("Deployment", uid) if d["metadata"]["name"] == name), None)
    if found is None:
        return None, [], []
    return found, snap.owned("ReplicaSet", found["metadata"]["uid"]), pods


def split(snap: Snapshot, uid: str) -> tuple[Observable, Observable]:
    """The stable Deployment (`<name>`) and the canary's (`<name>-canary`), each with its
    ReplicaSets and pods (the canary's pods by their track label: both Deployments' pods carry
    the model's selector labels)."""
    pods = snap.of_kind("Pod")
    stable_pods = [p for p in pods if not is_canary(p)]
    canary_pods = [p for p in pods if is_canary(p)]
    return (
        _deployment(snap, uid, snap.name, stable_pods),
        _deployment(snap, uid, canary_name(snap.name), canary_pods),
    )


def analyse(
    spec: SpeechModelSpec,
    namespace: str,
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    port: int = HTTP_PORT,
) -> Analysis:
    """The running step's verdict from the canary pods' metrics (I/O: their /metrics, or the
    Prometheus of `analysis.prometheusUrl`)."""
    settings = spec.rollout.canary_settings()
    if settings is None:
        return Analysis(None, "no canary")
    thresholds = settings.analysis
    canary_pods = [p for p in pods if is_canary(p)]
    try:
        if thresholds.prometheus_url:
            names = [str(p["metadata"]["name"]) for p in canary_pods]
            seen = canary_metrics.query_prometheus(
                thresholds.prometheus_url, namespace, names, at=now.timestamp()
            )
        else:
            targets = canary_metrics.pod_targets(canary_pods, port)
            if not targets:
                return Analysis(None, "no canary pod with an IP to read /metrics from")
            seen = canary_metrics.scrape_pods(targets)
    except canary_metrics.MetricsUnavailable as exc:
        return Analysis(None, str(exc))
    verdict = canary_analysis.judge(thresholds, canary_analysis.MetricsSample(), seen)
    return Analysis(verdict.ok, verdict.reason)
