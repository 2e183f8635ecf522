"""kopf handlers: gather inputs, call the pure core, apply its outputs. Nothing else.

Every trigger runs the same reconcile of one SpeechModel (reconciler.py), one at a time per
SpeechModel, on a snapshot of kopf's in-memory indexes taken in the event loop. Triggers:

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
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubescribe.errors import KubescribeError
from kubescribe_operator import apply, builders, cache, kopf_storage, metrics, routing
from kubescribe_operator.api import GROUP, PLURAL, VERSION
from kubescribe_operator.reconciler import Context, Outcome, reconcile
from kubescribe_operator.spec import SpecError

log = logging.getLogger(__name__)

_WAKING: set[asyncio.Future[None]] = set()
# How often kopf checks whether a stopped (deleted model's) resync timer has exited.
TIMER_EXIT_POLLING_SECONDS = 1.0


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
