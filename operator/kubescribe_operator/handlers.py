"""kopf handlers: gather inputs, call the pure core, apply its outputs. Nothing else.

Reconciliation is level-based: every trigger runs the same :func:`reconcile` for one SpeechModel,
which reads the SpeechModel and its Deployment, ReplicaSets and pods fresh from the API, asks
``rollout.decide`` what to run and what the status is, renders the children with
``builders.build_children`` and applies them and the status with ``apply`` (which writes nothing
when nothing changed). Triggers:

- ``on.create`` / ``on.update`` / ``on.resume`` of a SpeechModel (kopf keeps its bookkeeping under
  ``status.kopf``, never in the spec or annotations);
- events of the Deployments, ReplicaSets and pods labelled as a SpeechModel's, so a rollout's
  progress (pods ready, crash-looping, an init container failing) is seen at once;
- a timer per SpeechModel (``--resync-seconds``) that re-observes and catches up on anything a
  failed child-event reconcile missed (kopf gives each SpeechModel a finalizer for it, the only
  write outside ``.status``, and removes it on deletion, once a resync under way has ended);
- ``on.delete`` only counts; the children go with the SpeechModel by garbage collection through
  their ownerReferences.

Errors from the API (409 conflicts, 5xx) are raised as ``kopf.TemporaryError`` so kopf retries
the handler after ``--retry-backoff-seconds``; child events that fail are caught by the next
trigger or the timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from kubescribe.errors import KubescribeError
from kubescribe_operator import apply, builders, metrics, observe, rollout
from kubescribe_operator.api import GROUP, PLURAL, VERSION
from kubescribe_operator.spec import SpecError, parse_spec
from kubescribe_operator.status import Condition, ConditionType, SpeechModelStatus

log = logging.getLogger(__name__)


# The children whose events show a rollout's progress: (group, version, plural).
CHILD_RESOURCES = (
    ("apps", "v1", "deployments"),
    ("apps", "v1", "replicasets"),
    ("", "v1", "pods"),
)


# How often kopf checks whether a stopped (deleted model's) resync timer has exited.
TIMER_EXIT_POLLING_SECONDS = 1.0


@dataclass(frozen=True)
class Options:
    resync_seconds: float = 30.0
    retry_backoff_seconds: float = 10.0


@dataclass(frozen=True)
class Outcome:
    writes: int
    phase: str | None


_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
_locks_guard = threading.Lock()


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks[namespace, name]


def gather(
    kube: apply.Kube, namespace: str, name: str, uid: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """The SpeechModel's Deployment (if it owns it), its ReplicaSets and its pods."""
    deployment = kube.get(apply.DEPLOYMENT.path(namespace, name))
    if deployment is None or not apply.owned_by(deployment, uid):
        return None, [], []
    selector = builders.selector_labels(name)
    replicasets = kube.list(f"/apis/apps/v1/namespaces/{namespace}/replicasets", selector)
    replicasets = [rs for rs in replicasets if apply.owned_by(rs, deployment["metadata"]["uid"])]
    pods = kube.list(f"/api/v1/namespaces/{namespace}/pods", selector)
    return deployment, replicasets, pods


def reconcile(
    kube: apply.Kube, namespace: str, name: str, *, trigger: str, now: datetime | None = None
) -> Outcome | None:
    """Bring one SpeechModel's children and status in line. Returns None if it is gone."""
    with _lock(namespace, name), metrics.DURATION.time():
        metrics.RECONCILES.labels(trigger).inc()
        body = kube.get(apply.speechmodel_path(namespace, name))
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        meta = body["metadata"]
        uid, generation = str(meta["uid"]), int(meta.get("generation") or 1)
        raw_status: Mapping[str, Any] = body.get("status") or {}
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            _block(kube, body, raw_status, "InvalidSpec", str(exc))
            raise
        status = SpeechModelStatus.model_validate(raw_status) if raw_status else None

        deployment, replicasets, pods = gather(kube, namespace, name, uid)
        observed = observe.observe(deployment, replicasets, pods)
        decision = rollout.decide(
            spec,
            generation,
            status,
            observed,
            now or datetime.now(UTC),
            name=name,
            namespace=namespace,
        )
        children = builders.build_children(name, namespace, uid, spec, decision.model_ref)
        try:
            result = apply.apply_children(kube, namespace, name, uid, children)
        except apply.ChildConflict as exc:
            _block(kube, body, raw_status, "ChildConflict", str(exc))
            raise
        except apply.ResourceNotInstalled as exc:
            _block(kube, body, raw_status, "ResourceNotInstalled", str(exc))
            raise
        for verb, identities in (
            ("create", result.created),
            ("patch", result.patched),
            ("delete", result.deleted),
        ):
            for identity in identities:
                metrics.WRITES.labels(identity[1], verb).inc()

        patch = rollout.status_patch(raw_status, decision.status)
        writes = result.writes
        if patch:
            apply.patch_status(kube, namespace, name, patch)
            metrics.WRITES.labels("SpeechModel", "patch_status").inc()
            writes += 1
        # Events only once the status that records the transition is stored: never twice for
        # one transition; a crash right here loses them (Events are best effort anyway).
        for event in decision.events:
            apply.post_event(kube, body, event.type, event.reason, event.message)
            metrics.WRITES.labels("Event", "create").inc()
            if event.reason in metrics.ROLLOUT_RESULTS:
                metrics.ROLLOUTS.labels(metrics.ROLLOUT_RESULTS[event.reason]).inc()
        return Outcome(writes=writes + len(decision.events), phase=decision.status.get("phase"))


def blocked_status(
    prev: Mapping[str, Any], generation: int, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The status of a SpeechModel the operator cannot act on (invalid spec, a child's name
    taken): Stalled, not Ready, not Reconciling; the rest of the status is kept. Pure."""
    old = SpeechModelStatus.model_validate(prev) if prev else SpeechModelStatus()
    ts = rollout.timestamp(now)

    def condition(type_: ConditionType, flag: bool, text: str) -> Condition:
        value: Literal["True", "False"] = "True" if flag else "False"
        before = old.condition(type_)
        unchanged = before is not None and before.status == value
        return Condition(
            type=type_,
            status=value,
            reason=reason,
            message=text,
            last_transition_time=before.last_transition_time if before and unchanged else ts,
            observed_generation=generation,
        )

    return old.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Degraded" if old.current_version else "Failed",
            "conditions": [
                condition("Ready", False, message),
                condition("Reconciling", False, ""),
                condition("Stalled", True, message),
            ],
        }
    ).dump()


def _block(
    kube: apply.Kube,
    body: Mapping[str, Any],
    raw_status: Mapping[str, Any],
    reason: str,
    message: str,
) -> None:
    """Record why the SpeechModel is stuck (once: nothing is written if it already says so)."""
    meta = body["metadata"]
    generation = int(meta.get("generation") or 1)
    new = blocked_status(raw_status, generation, reason, message, datetime.now(UTC))
    patch = rollout.status_patch(raw_status, new)
    if patch:
        apply.patch_status(kube, meta["namespace"], meta["name"], patch)
        apply.post_event(kube, body, "Warning", reason, message)


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
    if isinstance(exc, SpecError):
        return "invalid_spec"
    return type(exc).__name__


def _run(
    kube: apply.Kube, options: Options, namespace: str, name: str, trigger: str
) -> Outcome | None:
    """Reconcile, mapping errors once: API errors and conflicts are retried, bad input is not."""
    try:
        outcome = reconcile(kube, namespace, name, trigger=trigger)
    except ApiException as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(
            f"Kubernetes API answered {exc.status} {exc.reason}; retrying",
            delay=options.retry_backoff_seconds,
        ) from exc
    except urllib3.exceptions.HTTPError as exc:  # connection refused, timed out
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(
            f"Kubernetes API unreachable: {exc}; retrying", delay=options.retry_backoff_seconds
        ) from exc
    except apply.ApplyError as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.TemporaryError(str(exc), delay=options.retry_backoff_seconds) from exc
    except KubescribeError as exc:
        metrics.ERRORS.labels(_error_kind(exc)).inc()
        raise kopf.PermanentError(str(exc)) from exc
    if outcome is not None:
        log.debug(
            "reconciled %s/%s (%s): %d write(s), phase %s",
            namespace, name, trigger, outcome.writes, outcome.phase,
        )  # fmt: skip
    return outcome


def _owner_name(body: Mapping[str, Any]) -> str | None:
    labels = body.get("metadata", {}).get("labels") or {}
    if labels.get(builders.LABEL_NAME) != "kubescribe":
        return None
    instance = labels.get(builders.LABEL_INSTANCE)
    return str(instance) if instance else None


def register(registry: kopf.OperatorRegistry, kube: apply.Kube, options: Options) -> None:
    """Register the handlers on ``registry`` (no global state: the process builds one)."""
    resource = (GROUP, VERSION, PLURAL)
    backoff = options.retry_backoff_seconds

    @kopf.on.resume(*resource, registry=registry, backoff=backoff)
    @kopf.on.create(*resource, registry=registry, backoff=backoff)
    @kopf.on.update(*resource, registry=registry, backoff=backoff)
    def model_changed(namespace: str | None, name: str, reason: str, **_: Any) -> None:
        _run(kube, options, namespace or "default", name, trigger=str(reason))

    @kopf.timer(
        *resource,
        registry=registry,
        interval=options.resync_seconds,
        initial_delay=options.resync_seconds,
        backoff=backoff,
    )
    def resync(namespace: str | None, name: str, logger: Any, **_: Any) -> None:
        try:
            _run(kube, options, namespace or "default", name, trigger="resync")
        except kopf.PermanentError as exc:
            # Recorded in the status already; keep the timer alive for when the spec is fixed.
            logger.warning("not reconciled: %s", exc)

    @kopf.on.delete(*resource, registry=registry, optional=True)
    def model_deleted(namespace: str | None, name: str, **_: Any) -> None:
        metrics.RECONCILES.labels("delete").inc()
        log.info("SpeechModel %s/%s deleted; its children are garbage-collected", namespace, name)

    child_labels: dict[str, Any] = {
        builders.LABEL_NAME: "kubescribe",
        builders.LABEL_INSTANCE: kopf.PRESENT,
    }

    def child_changed(body: kopf.Body, namespace: str | None, type: str, **_: Any) -> None:
        owner = _owner_name(body)
        if owner is None or namespace is None or not type:  # no type: the initial listing
            return
        started = time.monotonic()
        try:
            reconcile(kube, namespace, owner, trigger=f"child_{type.lower()}")
        except (ApiException, KubescribeError, urllib3.exceptions.HTTPError) as exc:
            metrics.ERRORS.labels(_error_kind(exc)).inc()
            log.warning("reconcile of %s/%s after a child event failed: %s", namespace, owner, exc)
        log.debug("child event for %s/%s took %.3fs", namespace, owner, time.monotonic() - started)

    for group, version, plural in CHILD_RESOURCES:
        kopf.on.event(group, version, plural, registry=registry, labels=child_labels)(child_changed)


def settings_for(settings: kopf.OperatorSettings) -> None:
    """kopf settings the handlers rely on (called from the process's startup handler)."""
    # Keep kopf's bookkeeping in status.kopf: the operator never writes spec or annotations.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    settings.persistence.finalizer = "kubescribe.io/operator"
    # A SpeechModel deleted while its resync timer runs (a sync handler: kopf cannot interrupt
    # it) keeps that finalizer until kopf sees the timer has exited, and kopf checks again only
    # after this polling interval (60 s by default, during which nothing else wakes it up).
    settings.background.cancellation_polling = TIMER_EXIT_POLLING_SECONDS
    # Routine log lines are not Events (a resync must not write); our Events are explicit.
    settings.posting.level = logging.WARNING
    # Watch only the children of SpeechModels (server-side), not every pod of the cluster.
    selector = f"{builders.LABEL_NAME}=kubescribe,{builders.LABEL_MANAGED_BY}={apply.FIELD_MANAGER}"
    for child in CHILD_RESOURCES:
        settings.watching.label_selectors[child] = selector
