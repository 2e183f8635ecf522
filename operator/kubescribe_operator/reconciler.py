"""One reconcile of one SpeechModel: a snapshot of it and its children in, writes out.

Reconciliation is level-based: every trigger (handlers.py) runs the same :func:`reconcile` on a
:class:`~kubescribe_operator.cache.Snapshot` taken from kopf's in-memory indexes (watch caches:
no GET or LIST per reconcile). It asks ``observe`` and ``canary.decide`` (``rollout.decide``
when no canary runs) what to run and what the status is, renders the children with
``builders.build_children`` and applies them (server-side apply, ``apply.py``) and the status,
writing nothing when nothing changed. A child the API server refuses, a conflict or a missing
resource is recorded in the status (:func:`_block`) and raised for handlers.py to retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubescribe_operator import (
    apply,
    builders,
    cache,
    canary,
    canary_children,
    canary_edge,
    metrics,
    observe,
    overlap,
    routing,
    scaling,
)
from kubescribe_operator.api import API_VERSION, KIND
from kubescribe_operator.kube import Kube, patch_status, post_event
from kubescribe_operator.spec import SpecError, parse_spec
from kubescribe_operator.status import (
    SpeechModelStatus,
    blocked_status,
    status_patch,
    timestamp,
    with_optional_children,
)

log = logging.getLogger(__name__)

RECONCILE_THREADS = 32


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 30.0
    retry_backoff_seconds: float = 10.0


@dataclass(frozen=True)
class Outcome:
    writes: int
    requests: int
    phase: str | None
    wake_at: datetime | None = None  # a canary step's end: reconcile again then


@dataclass
class Context:
    """What the handlers share: the API client, the apply memory, one lock per SpeechModel."""

    kube: Kube
    options: Options = field(default_factory=Options)
    memory: apply.Memory = field(default_factory=apply.Memory)
    routes: routing.RoutingMemory = field(default_factory=routing.RoutingMemory)
    # Reconciles wait on the API most of the time: enough threads that a burst of models is
    # not queued behind a handful of slow requests (the client's pool has as many connections).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(RECONCILE_THREADS, "reconcile")
    )
    release: str = "kubescribe"  # this operator release (its peering name): overlap.py
    started: str = field(default_factory=lambda: timestamp(datetime.now(UTC)))
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _waiting: Counter[tuple[str, str]] = field(default_factory=Counter)
    _unobserved_since: dict[tuple[str, str], float] = field(default_factory=dict)
    _overlaps_warned: set[tuple[str, str, str]] = field(default_factory=set)
    _wakeups: dict[tuple[str, str], asyncio.TimerHandle] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())


def _hpa(snap: cache.Snapshot, uid: str) -> dict[str, Any] | None:
    """The SpeechModel's HorizontalPodAutoscaler (if it owns it), as the watch cache has it."""
    owned = snap.owned("HorizontalPodAutoscaler", uid)
    return next((h for h in owned if h["metadata"]["name"] == snap.name), None)


def reconcile(
    ctx: Context, snap: cache.Snapshot, *, trigger: str, now: datetime | None = None
) -> Outcome | None:
    """Bring one SpeechModel's children and status in line. Returns None if it is gone."""
    with metrics.DURATION.time():
        metrics.RECONCILES.labels(trigger).inc()
        snap = ctx.memory.overlay.apply_to(snap)
        body = snap.speechmodel
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        if _left_to_another_release(ctx, body):
            return None
        meta = body["metadata"]
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 1)
        raw_status: Mapping[str, Any] = body.get("status") or {}
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            _block(ctx, body, raw_status, "InvalidSpec", str(exc))
            raise
        status = SpeechModelStatus.model_validate(raw_status) if raw_status else None

        # The stable Deployment and, with rollout.strategy Canary, the canary's (canary.py).
        stable, in_canary = canary_edge.split(snap, uid)
        now = now or datetime.now(UTC)
        analysis = None
        if canary.analysis_due(spec, status, now):  # a step's end: read the canary's metrics
            analysis = canary_edge.analyse(spec, snap.namespace, in_canary[2], now)
        steps = canary.decide(
            spec,
            generation,
            status,
            observe.observe(*stable),
            observe.observe(*in_canary),
            now,
            analysis=analysis,
            name=snap.name,
            namespace=snap.namespace,
        )
        decision, plan, render = steps.decision, steps.plan, steps.decision.spec or spec
        children = canary_children.canary_children(
            builders.build_children(snap.name, snap.namespace, uid, render, decision.model_ref),
            builders.build_deployment(snap.name, snap.namespace, uid, spec, plan.ref)
            if plan is not None
            else None,
            snap.name,
            render,
            plan,
        )
        try:
            result = apply.apply_children(ctx.kube, ctx.memory, snap, uid, children)
        except apply.ChildConflict as exc:
            _block(ctx, body, raw_status, "ChildConflict", str(exc))
            raise
        except apply.ResourceNotInstalled as exc:
            _block(ctx, body, raw_status, "ResourceNotInstalled", str(exc))
            raise
        except apply.ChildRefused as exc:
            _block(ctx, body, raw_status, "ChildRefused", str(exc))
            raise
        for verb, identities in (
            ("apply", result.created + result.patched),
            ("delete", result.deleted),
        ):
            for identity in identities:
                metrics.WRITES.labels(identity[1], verb).inc()

        # The HPA's verdict on scaling: a condition of its own, never readiness.
        hpa = _hpa(snap, uid) if spec.autoscaling is not None else None
        new_status, scaling_events = scaling.with_scaling_condition(
            decision.status, status, scaling.hpa_health(hpa), generation, now
        )
        # (The HTTPRoute is optional too, but has a condition of its own: Routed.)
        kinds = result.skipped_kinds
        skipped = "; ".join(m for k, m in kinds.items() if k != routing.httproute.KIND)
        new_status, optional_events = with_optional_children(
            new_status,
            status,
            spec.monitoring.service_monitor.enabled,
            skipped,
            "ResourceNotInstalled" if apply.NOT_SERVED in skipped else "ChildRefused",
            now,
        )
        # Behind Gateways: what they say of the route, and the model's catalogue entry.
        verdict, looked_up = routing.health(ctx.kube, ctx.routes, snap, uid, spec, kinds)
        new_status, routed_events = routing.with_routed_condition(new_status, status, verdict, now)
        catalogued = routing.sync_catalog(ctx.kube, ctx.routes, snap, uid, spec)
        patch = status_patch(raw_status, new_status)
        writes = result.writes + catalogued
        requests = result.requests + looked_up + catalogued
        if patch:
            _patch_status(ctx, body, patch)
            metrics.WRITES.labels("SpeechModel", "patch_status").inc()
            writes, requests = writes + 1, requests + 1
        # Events only once the status that records the transition is stored: never twice for
        # one transition; a crash right here loses them (Events are best effort anyway).
        events = (*decision.events, *scaling_events, *optional_events, *routed_events)
        for event in events:
            post_event(ctx.kube, body, event.type, event.reason, event.message)
            metrics.WRITES.labels("Event", "create").inc()
            if event.reason in metrics.ROLLOUT_RESULTS:
                metrics.ROLLOUTS.labels(metrics.ROLLOUT_RESULTS[event.reason]).inc()
        n = len(events)
        return Outcome(
            writes=writes + n,
            requests=requests + n,
            phase=new_status.get("phase"),
            wake_at=steps.wake_at,
        )


def _left_to_another_release(ctx: Context, body: Mapping[str, Any]) -> bool:
    """Whether another operator release reconciles this SpeechModel (its namespace is watched
    by both) and this one leaves it to that one; warns once (overlap.py)."""
    meta = body["metadata"]
    key = (str(meta.get("namespace")), str(meta.get("name")))
    other = overlap.leaves_to(body, ctx.release, ctx.started)
    if other is None:
        ctx._unobserved_since.pop(key, None)
        return False
    if overlap.unobserved(body):
        since = ctx._unobserved_since.setdefault(key, time.monotonic())
        if time.monotonic() - since > overlap.TAKEOVER_SECONDS:
            log.warning("%s/%s: release %s does not act on it; taking it back", *key, other)
            ctx._unobserved_since.pop(key, None)
            return False
    else:
        ctx._unobserved_since.pop(key, None)
    if (*key, other) not in ctx._overlaps_warned:
        ctx._overlaps_warned.add((*key, other))
        message = (
            f"SpeechModel {key[0]}/{key[1]} is also reconciled by operator release {other}; "
            f"release {ctx.release} leaves it to that one. Watch each namespace with one release "
            "only (watchNamespaces of one must not overlap another's; a cluster-wide release "
            "watches every namespace)"
        )
        log.warning(message)
        post_event(ctx.kube, body, "Warning", "OverlappingReleases", message)
        metrics.ERRORS.labels("overlapping_release").inc()
    return True


def _patch_status(ctx: Context, body: Mapping[str, Any], patch: dict[str, Any]) -> None:
    meta = body["metadata"]
    after = patch_status(ctx.kube, meta["namespace"], meta["name"], patch)
    if after is not None:
        after.setdefault("apiVersion", API_VERSION)
        after.setdefault("kind", KIND)
        ctx.memory.overlay.wrote(cache.object_key(after), dict(body), after)


def _block(
    ctx: Context,
    body: Mapping[str, Any],
    raw_status: Mapping[str, Any],
    reason: str,
    message: str,
) -> None:
    """Record why the SpeechModel is stuck (once: nothing is written if it already says so)."""
    generation = int(body["metadata"].get("generation") or 1)
    new = blocked_status(raw_status, generation, reason, message, datetime.now(UTC))
    patch = status_patch(raw_status, new)
    if patch:
        _patch_status(ctx, body, patch)
        post_event(ctx.kube, body, "Warning", reason, message)
