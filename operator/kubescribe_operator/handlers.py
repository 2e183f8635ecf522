"""kopf handlers: gather inputs, call the pure core, apply its outputs. Nothing else.

Reconciliation is level-based: every trigger runs the same :func:`reconcile` for one SpeechModel
on a :class:`~kubescribe_operator.cache.Snapshot` of it and its children taken from kopf's
in-memory indexes (watch caches: no GET or LIST per reconcile). It asks ``observe`` and
``rollout.decide`` what to run and what the status is, renders the children with
``builders.build_children`` and applies them (server-side apply, ``apply.py``) and the status,
writing nothing when nothing changed. Triggers:

- ``on.create`` / ``on.update`` / ``on.resume`` of a SpeechModel (kopf keeps its bookkeeping under
  ``status.kopf``, never in the spec or annotations);
- events of the children labelled as a SpeechModel's (Deployments, ReplicaSets, pods, Services,
  HPAs, PDBs, ServiceMonitors), so a rollout's progress is seen at once and a child changed or
  deleted by someone else is put back;
- a timer per SpeechModel (``--resync-seconds``) that re-observes (from the caches: an idle
  resync makes no request) and catches up on anything a failed child-event reconcile missed
  (kopf gives each SpeechModel a finalizer for it, the only write outside ``.status``, and
  removes it on deletion, once a resync under way has ended);
- ``on.delete`` only counts; the children go with the SpeechModel by garbage collection through
  their ownerReferences.

Errors from the API (409 conflicts, 5xx) are raised as ``kopf.TemporaryError`` so kopf retries
the handler after ``--retry-backoff-seconds``; a child the API server refuses is recorded in the
status (``ChildRefused``, with the server's message) and retried with a doubling back-off; child
events that fail are caught by the next trigger or the timer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubescribe.errors import KubescribeError
from kubescribe_operator import (
    apply,
    builders,
    cache,
    canary,
    canary_children,
    canary_edge,
    kopf_storage,
    metrics,
    observe,
    overlap,
    routing,
    scaling,
)
from kubescribe_operator.api import API_VERSION, GROUP, KIND, PLURAL, VERSION
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
_WAKING: set[asyncio.Future[None]] = set()
# How often kopf checks whether a stopped (deleted model's) resync timer has exited.
TIMER_EXIT_POLLING_SECONDS = 1.0


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


def _error_kind(exc: Exception) -> str:
    """The ``error`` label of the errors metric."""
    if isinstance(exc, ApiException):
        return f"api_{exc.status}"
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return "api_unreachable"
    if isinstance(exc, apply.ChildConflict):
        return "child_conflict"
    if isinstance(exc, apply.ResourceNotInstalled):
        return "resource_not_installed"
    if isinstance(exc, apply.ChildRefused):
        return "child_refused"
    if isinstance(exc, SpecError):
        return "invalid_spec"
    return type(exc).__name__


async def _reconcile(
    ctx: Context,
    indexes: Mapping[str, Any],
    namespace: str,
    name: str,
    trigger: str,
    *,
    coalesce: bool = False,
) -> Outcome | None:
    """One reconcile at a time per SpeechModel: snapshot the caches (in the event loop, where
    they change), then do the work in a thread.

    ``coalesce`` (child events): when a reconcile of this SpeechModel already waits for its
    turn, this one is not needed: the waiting one snapshots the caches after this event (kopf
    updates its indexes before it calls the handlers), so a burst of pod and ReplicaSet events
    costs one reconcile, not one each. Returns None then.
    """
    key = (namespace, name)
    if coalesce and ctx._waiting[key]:
        metrics.RECONCILES.labels("coalesced").inc()
        return None
    ctx._waiting[key] += 1
    waiting = True
    try:
        async with ctx.lock(namespace, name):
            ctx._waiting[key] -= 1
            waiting = False
            snap = cache.snapshot(indexes, namespace, name)
            work = functools.partial(reconcile, ctx, snap, trigger=trigger)
            outcome = await asyncio.get_running_loop().run_in_executor(ctx.executor, work)
            if outcome is not None and outcome.wake_at is not None:
                _wake_at(ctx, indexes, namespace, name, outcome.wake_at)
            return outcome
    finally:
        if waiting:  # cancelled while waiting for its turn
            ctx._waiting[key] -= 1
        if ctx._waiting[key] <= 0:
            del ctx._waiting[key]


def _wake_at(
    ctx: Context, indexes: Mapping[str, Any], namespace: str, name: str, at: datetime
) -> None:
    """Reconcile the SpeechModel again at ``at`` (a canary step's end), once: a later wake-up
    replaces an earlier one. The state is in the status, so a wake-up lost with the process is
    caught by the next resync."""
    key = (namespace, name)
    loop = asyncio.get_running_loop()
    delay = max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.1

    async def wake() -> None:
        ctx._wakeups.pop(key, None)
        try:
            await _reconcile(ctx, indexes, namespace, name, "canary_step", coalesce=True)
        except (ApiException, KubescribeError, urllib3.exceptions.HTTPError) as exc:
            metrics.ERRORS.labels(_error_kind(exc)).inc()
            log.warning("canary step reconcile of %s/%s failed: %s", namespace, name, exc)

    old = ctx._wakeups.pop(key, None)
    if old is not None:
        old.cancel()

    def fire() -> None:
        task = asyncio.ensure_future(wake())
        _WAKING.add(task)  # a reference, so the task is not collected while it runs
        task.add_done_callback(_WAKING.discard)

    ctx._wakeups[key] = loop.call_later(delay, fire)


async def _run(
    ctx: Context, indexes: Mapping[str, Any], namespace: str, name: str, trigger: str
) -> Outcome | None:
    """Reconcile, mapping errors once: API errors and conflicts are retried, bad input is not."""
    backoff = ctx.options.retry_backoff_seconds
    try:
        outcome = await _reconcile(ctx, indexes, namespace, name, trigger)
    except ApiException as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(
            f"Kubernetes API answered {exc.status} {exc.reason}; retrying", delay=backoff
        ) from exc
    except urllib3.exceptions.HTTPError as exc:  # connection refused, timed out
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(
            f"Kubernetes API unreachable: {exc}; retrying", delay=backoff
        ) from exc
    except apply.ChildRefused as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(str(exc), delay=max(backoff, exc.retry_in)) from exc
    except apply.ApplyError as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(str(exc), delay=backoff) from exc
    except KubescribeError as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.PermanentError(str(exc)) from exc
    if outcome is not None:
        log.debug(
            "reconciled %s/%s (%s): %d request(s), %d write(s), phase %s",
            namespace, name, trigger, outcome.requests, outcome.writes, outcome.phase,
        )  # fmt: skip
    return outcome


def _indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {name: kwargs.get(name) for name in cache.INDEX_NAMES}


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Register the handlers and indexes on ``registry`` (no global state)."""
    resource = (GROUP, VERSION, PLURAL)
    backoff = ctx.options.retry_backoff_seconds
    child_labels: dict[str, Any] = {
        builders.LABEL_NAME: "kubescribe",
        builders.LABEL_INSTANCE: kopf.PRESENT,
    }

    def index_speechmodel(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
        return cache.index_speechmodel(namespace, name, body)

    def index_child(namespace: str | None, body: kopf.Body, **_: Any) -> Any:
        return cache.index_child(namespace, body)

    kopf.index(*resource, registry=registry, id=cache.SPEECHMODELS)(index_speechmodel)
    for kind in cache.WATCHED_CHILDREN:
        kopf.index(
            kind.group, kind.version, kind.plural,
            registry=registry, labels=child_labels, id=cache.index_name(kind),
        )(index_child)  # fmt: skip

    @kopf.on.resume(*resource, registry=registry, backoff=backoff)
    @kopf.on.create(*resource, registry=registry, backoff=backoff)
    @kopf.on.update(*resource, registry=registry, backoff=backoff)
    async def model_changed(namespace: str | None, name: str, reason: str, **kw: Any) -> None:
        await _run(ctx, _indexes(kw), namespace or "default", name, trigger=str(reason))

    @kopf.timer(
        *resource,
        registry=registry,
        interval=ctx.options.resync_seconds,
        initial_delay=ctx.options.resync_seconds,
        backoff=backoff,
    )
    async def resync(namespace: str | None, name: str, logger: Any, **kw: Any) -> None:
        try:
            await _run(ctx, _indexes(kw), namespace or "default", name, trigger="resync")
        except kopf.PermanentError as exc:
            # Recorded in the status already; keep the timer alive for when the spec is fixed.
            logger.warning("not reconciled: %s", exc)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def model_deleted(namespace: str | None, name: str, spec: Any, **_: Any) -> None:
        metrics.RECONCILES.labels("delete").inc()
        log.info("SpeechModel %s/%s deleted; its children are garbage-collected", namespace, name)
        routing.forget(ctx.kube, namespace or "default", name, spec or {})  # its catalogue entry

    async def child_changed(body: kopf.Body, namespace: str | None, type: str, **kw: Any) -> None:
        owner = cache.owner_name(body)
        if owner is None or namespace is None or not type:  # no type: the initial listing
            return
        started = time.monotonic()
        try:
            await _reconcile(
                ctx, _indexes(kw), namespace, owner, f"child_{type.lower()}", coalesce=True
            )
        except (ApiException, KubescribeError, urllib3.exceptions.HTTPError) as exc:
            metrics.ERRORS.labels(_error_kind(exc)).inc()
            log.warning("reconcile of %s/%s after a child event failed: %s", namespace, owner, exc)
        log.debug("child event for %s/%s took %.3fs", namespace, owner, time.monotonic() - started)

    for kind in cache.WATCHED_CHILDREN:
        kopf.on.event(
            kind.group, kind.version, kind.plural, registry=registry, labels=child_labels
        )(child_changed)


def settings_for(settings: kopf.OperatorSettings) -> None:
    """kopf settings the handlers rely on (called from the process's startup handler)."""
    # Keep kopf's bookkeeping in status.kopf: the operator never writes spec or annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    # A digest, not the whole spec as JSON (describe showed that blob): kopf_storage.py.
    settings.persistence.diffbase_storage = kopf_storage.DigestDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    settings.persistence.finalizer = "kubescribe.io/operator"
    # A SpeechModel deleted while its resync timer runs keeps that finalizer until kopf sees the
    # timer has exited, and kopf checks again only after this polling interval (60 s by default,
    # during which nothing else wakes it up).
    settings.background.cancellation_polling = TIMER_EXIT_POLLING_SECONDS
    # Routine log lines are not Events (a resync must not write); our Events are explicit.
    settings.posting.level = logging.WARNING
    # Watch only the children of SpeechModels (server-side), not every pod of the cluster.
    selector = (
        f"{builders.LABEL_NAME}=kubescribe,{builders.LABEL_MANAGED_BY}={builders.FIELD_MANAGER}"
    )
    for kind in cache.WATCHED_CHILDREN:
        settings.watching.label_selectors[kind.group, kind.version, kind.plural] = selector
