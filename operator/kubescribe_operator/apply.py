"""Apply a SpeechModel's children: server-side apply under one field manager, no needless writes.

Kubernetes API usage (the chart's least-privilege RBAC is derived from this table, and a test
compares them; keep both in step). ``(group, resource): verbs``:

    kubescribe.io       speechmodels                 get list watch patch   (patch: kopf's
                                                     finalizer in metadata, never the spec)
    kubescribe.io       speechmodels/status          patch
    kubescribe.io       speechmodels/finalizers      update (blockOwnerDeletion on the children,
                                                     where OwnerReferencesPermissionEnforcement)
    apps                deployments                  get list watch create patch delete
    apps                replicasets                  list watch
    ""                  pods                         list watch
    ""                  services                     get list watch create patch delete
    autoscaling         horizontalpodautoscalers     get list watch create patch delete
    policy              poddisruptionbudgets         get list watch create patch delete
    monitoring.coreos.com servicemonitors            get list watch create patch delete
    gateway.networking.k8s.io httproutes             get list watch create patch delete
    gateway.networking.k8s.io gateways               get    (routing.py: does a parentRef's
                                                     Gateway exist, while none reports on it)
    ""                  configmaps                   create patch delete (routing.py: the
                                                     catalogue; delete is never sent, but
                                                     OwnerReferencesPermissionEnforcement asks
                                                     for it when a second model adds its
                                                     ownerReference)
    ""                  events                       create
    kopf.dev            clusterkopfpeerings          get list watch patch   (--all-namespaces)
    kopf.dev            kopfpeerings                 get list watch patch   (--namespace)
    apiextensions.k8s.io customresourcedefinitions   list watch             (kopf's scanning)
    ""                  namespaces                   list watch             (kopf's scanning)

``API_USAGE`` below is the same table as data. (Server-side apply creates through ``patch``; the
API server also asks for ``create`` when the object does not exist yet.)

How a child is applied:

- Server-side apply (``PATCH`` with ``application/apply-patch+yaml``, field manager
  ``kubescribe-operator``, ``force=true``): the built object is the operator's whole intent, so
  a field dropped from the SpeechModel (an env var, a limit, a toleration) leaves the child, and
  fields other managers own (server defaults, the HPA's ``spec.replicas``) are left alone. Force
  only takes fields the operator declares, i.e. its own.
- A child the watch cache does not show is first created as a dry run: the cache only sees
  objects with the operator's labels, and apply would take over someone else's object of that
  name. On the API server's 409 the object is read once: ownership is its ownerReference, not
  its labels, so one that still names the SpeechModel as owner (relabelled by hand) is adopted
  (the apply puts the labels back); any other is a ``ChildConflict``, left alone.
- No request when nothing changed: the operator remembers, per child, the digest of what it
  applied and the field set the server recorded for it (``managedFields``). A child whose
  desired digest is unchanged and whose field set in the watch cache is the one recorded is
  intact, whatever the server did to the values (a quantity normalised, an unknown key pruned).
  After a restart the memory is empty: each child is applied once (a no-op for the server).
- With autoscaling on the Deployment is applied without ``spec.replicas``. If the operator
  owned it before (autoscaling just turned on), it first hands the field over to a separate
  manager (``kubescribe-operator-handover``) at its current value, so dropping it does not reset
  the Deployment to one replica; the HPA takes it from there.
- Children of a kind the SpeechModel no longer needs (an HPA after autoscaling is turned off, a
  PDB at one replica) are deleted; objects not owned by the SpeechModel are never touched.
- A child the API server refuses (422/400/403: invalid, or refused by admission; a 500 that
  only the server's apply finds, e.g. duplicate list-map keys) raises :class:`ChildRefused` with
  the server's message, a kind the cluster does not serve (404) :class:`ResourceNotInstalled`;
  the same desired child is not sent again before a back-off (doubling from
  ``Memory.base_backoff`` up to ``max_backoff``) has passed. An optional child (a
  ServiceMonitor) raises neither: it is skipped (``ApplyResult.skipped``, a warning condition on
  the SpeechModel) and the others are applied.

The SpeechModel itself is only ever patched on ``/status`` (GitOps owns the spec); kopf adds and
removes its finalizer in ``metadata.finalizers``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from kubescribe.errors import KubescribeError
from kubescribe_operator import naming
from kubescribe_operator.api import GROUP, PLURAL
from kubescribe_operator.cache import Overlay, Snapshot, object_key, owned_by
from kubescribe_operator.kinds import CHILD_KINDS, FIELD_MANAGER, kind_of
from kubescribe_operator.kube import Kube, server_message

HANDOVER_MANAGER = f"{FIELD_MANAGER}-handover"

Obj = dict[str, Any]
Identity = tuple[str, str, str]  # (apiVersion, kind, name)

API_USAGE: dict[tuple[str, str], frozenset[str]] = {
    (GROUP, PLURAL): frozenset({"get", "list", "watch", "patch"}),
    (GROUP, f"{PLURAL}/status"): frozenset({"patch"}),
    (GROUP, f"{PLURAL}/finalizers"): frozenset({"update"}),
    ("apps", "deployments"): frozenset({"get", "list", "watch", "create", "patch", "delete"}),
    ("apps", "replicasets"): frozenset({"list", "watch"}),
    ("", "pods"): frozenset({"list", "watch"}),
    ("", "services"): frozenset({"get", "list", "watch", "create", "patch", "delete"}),
    ("autoscaling", "horizontalpodautoscalers"): frozenset(
        {"get", "list", "watch", "create", "patch", "delete"}
    ),
    ("policy", "poddisruptionbudgets"): frozenset(
        {"get", "list", "watch", "create", "patch", "delete"}
    ),
    ("monitoring.coreos.com", "servicemonitors"): frozenset(
        {"get", "list", "watch", "create", "patch", "delete"}
    ),
    ("gateway.networking.k8s.io", "httproutes"): frozenset(
        {"get", "list", "watch", "create", "patch", "delete"}
    ),
    ("gateway.networking.k8s.io", "gateways"): frozenset({"get"}),
    ("", "configmaps"): frozenset({"create", "patch", "delete"}),
    ("", "events"): frozenset({"create"}),
    ("kopf.dev", "clusterkopfpeerings"): frozenset({"get", "list", "watch", "patch"}),
    ("kopf.dev", "kopfpeerings"): frozenset({"get", "list", "watch", "patch"}),
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
    ("", "namespaces"): frozenset({"list", "watch"}),
}

log = logging.getLogger(__name__)


class ApplyError(KubescribeError):
    """A child cannot be applied; the SpeechModel is stuck until something outside changes."""


class ChildConflict(ApplyError):
    """A child's name is taken by an object the SpeechModel does not own."""


class ChildRefused(ApplyError):
    """The API server refused a child (invalid, refused by an admission plugin, or a merge
    only the server's apply finds wrong); not sent again before ``retry_in`` seconds."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class ResourceNotInstalled(ChildRefused):
    """The cluster does not serve a required child's kind; retried with the same back-off."""


NOT_SERVED = "the cluster does not serve"
# What a server-side apply answers 500 for when the object itself is wrong, not the server
# (e.g. duplicate keys of a list-map): as permanent as a 422 until the object changes.
_APPLY_MERGE_ERRORS = ("duplicate entries for key", "failed to create typed", "typed patch")


def _refusal(
    exc: ApiException, kind: str, api_version: str, plural: str, namespace: str, name: str
) -> str | None:
    """The message of an answer that will not change by retrying the same object (None: a
    conflict or a server error worth a retry)."""
    reason, text = server_message(exc)
    if exc.status == 404:  # the resource itself is unknown to the cluster
        return (
            f"cannot apply {kind} {namespace}/{name}: {NOT_SERVED} "
            f"{api_version} {plural} (is its CRD installed?)"
        )
    merge_error = exc.status == 500 and any(m in text for m in _APPLY_MERGE_ERRORS)
    if exc.status in (400, 403, 422) or merge_error:
        return f"the API server refused {kind} {namespace}/{name} ({exc.status} {reason}): {text}"
    return None


def _not_owned(kind: str, namespace: str, name: str, model: str) -> str:
    return (
        f"{kind} {namespace}/{name} exists and has no ownerReference to SpeechModel {model}: "
        "it is someone else's and is left alone; give the SpeechModel another name, or remove "
        "that object if nothing else uses it"
    )


def _owned(kube: Kube, path: str, owner_uid: str, conflict: str) -> Obj:
    """The object at ``path`` if the SpeechModel owns it by ownerReference (whatever its
    labels say), else ChildConflict."""
    found = kube.get(path)
    if not owned_by(found, owner_uid):
        raise ChildConflict(conflict)
    return found


def _send(kube: Kube, path: str, child: Obj, live: Obj | None, result: ApplyResult) -> Obj:
    """Apply ``child`` (after handing ``spec.replicas`` over where needed); counts requests."""
    given = handover(child, live)
    if given is not None:
        log.info("handing %s spec.replicas over", path)
        live = kube.apply(path, given, manager=HANDOVER_MANAGER)
        result.requests += 1
    log.info("applying %s", path)
    after = kube.apply(path, child, new=live is None)
    result.requests += 1 if live is not None else 2
    return after


# ---------------------------------------------------------------------------- pure planning


def digest(obj: Mapping[str, Any]) -> str:
    """A stable hash of a desired object."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def managed_fields(obj: Mapping[str, Any] | None, manager: str = FIELD_MANAGER) -> str | None:
    """The field set ``manager`` owns by server-side apply (canonical JSON), None if none."""
    for entry in (obj or {}).get("metadata", {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            return json.dumps(entry.get("fieldsV1") or {}, sort_keys=True)
    return None


@dataclass(frozen=True)
class Applied:
    """What the operator last applied to a child and the field set the server recorded."""

    digest: str
    fields: str | None


def is_intact(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, last: Applied | None
) -> bool:
    """Whether ``live`` still is what applying ``desired`` made of it (nothing to send)."""
    return (
        live is not None
        and last is not None
        and last.digest == digest(desired)
        and last.fields is not None
        and managed_fields(live) == last.fields
    )


def handover(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> Obj | None:
    """The apply that hands the Deployment's ``spec.replicas`` to another manager, when the
    operator must stop owning it (autoscaling on) and still does. Pure."""
    if desired.get("kind") != "Deployment" or "replicas" in (desired.get("spec") or {}):
        return None
    fields = managed_fields(live)
    if live is None or fields is None or '"f:replicas"' not in fields:
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    if replicas is None:
        return None
    meta = desired["metadata"]
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


def stale_children(snap: Snapshot, desired: Sequence[Mapping[str, Any]], uid: str) -> list[Obj]:
    """Children owned by ``uid`` of the kinds the operator writes that are no longer desired."""
    wanted = {naming.child_identity(dict(d)) for d in desired}
    return [
        obj
        for kind in CHILD_KINDS.values()
        for obj in snap.owned(kind.kind, uid)
        if naming.child_identity(obj) not in wanted
    ]


# ------------------------------------------------------------------------------- applying


@dataclass
class Memory:
    """What this process applied, and the refusals it backs off from (thread-safe)."""

    base_backoff: float = 10.0
    max_backoff: float = 300.0
    overlay: Overlay = field(default_factory=Overlay)
    _applied: dict[tuple[str, Identity], Applied] = field(default_factory=dict)
    _refused: dict[tuple[str, Identity], tuple[str, int, float, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def applied(self, namespace: str, identity: Identity) -> Applied | None:
        with self._lock:
            return self._applied.get((namespace, identity))

    def remember(self, namespace: str, identity: Identity, applied: Applied | None) -> None:
        with self._lock:
            if applied is None:
                self._applied.pop((namespace, identity), None)
            else:
                self._applied[namespace, identity] = applied
            self._refused.pop((namespace, identity), None)

    def refusal(self, namespace: str, identity: Identity, want: str) -> tuple[str, float] | None:
        """(message, seconds left) while a refusal of this very object is backed off from."""
        with self._lock:
            entry = self._refused.get((namespace, identity))
        if entry is None or entry[0] != want:
            return None
        left = entry[2] - time.monotonic()
        return (entry[3], left) if left > 0 else None

    def refused(self, namespace: str, identity: Identity, want: str, message: str) -> float:
        """Record a refusal; returns the back-off before the same object is sent again."""
        with self._lock:
            before = self._refused.get((namespace, identity))
            count = before[1] + 1 if before is not None and before[0] == want else 1
            delay = min(self.max_backoff, self.base_backoff * 2 ** (count - 1))
            self._refused[namespace, identity] = (want, count, time.monotonic() + delay, message)
        return delay


@dataclass
class ApplyResult:
    created: list[Identity] = field(default_factory=list)
    patched: list[Identity] = field(default_factory=list)
    deleted: list[Identity] = field(default_factory=list)
    requests: int = 0
    # Optional children (a ServiceMonitor) that could not be applied, and why: a warning on
    # the SpeechModel, never a failure; retried after the same back-off as a refusal.
    skipped: list[str] = field(default_factory=list)
    skipped_kinds: dict[str, str] = field(default_factory=dict)  # kind -> why (the same)

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.patched) + len(self.deleted)


def apply_children(
    kube: Kube,
    memory: Memory,
    snap: Snapshot,
    owner_uid: str,
    desired: Sequence[Obj],
) -> ApplyResult:
    """Apply every desired child that is not intact, then delete owned children not desired."""
    namespace, result = snap.namespace, ApplyResult()
    for child in desired:
        kind = kind_of(child)
        identity = naming.child_identity(child)
        name = child["metadata"]["name"]
        live = next((o for o in snap.of_kind(kind.kind) if o["metadata"]["name"] == name), None)
        if live is not None and not owned_by(live, owner_uid):
            raise ChildConflict(_not_owned(kind.kind, namespace, name, snap.name))
        if is_intact(child, live, memory.applied(namespace, identity)):
            continue
        want = digest(child)
        backing_off = memory.refusal(namespace, identity, want)
        if backing_off is not None:
            if kind.optional:
                result.skipped.append(backing_off[0])
                result.skipped_kinds[kind.kind] = backing_off[0]
                continue
            raise ChildRefused(*backing_off)
        path = kind.path(namespace, name)
        try:
            try:
                after = _send(kube, path, child, live, result)
            except ApiException as exc:
                if exc.status != 409 or live is not None:
                    raise
                # The name is taken by an object the watch does not show: ours by
                # ownerReference but relabelled (adopted: the apply puts the labels back), or
                # someone else's (a conflict).
                result.requests += 2  # the dry-run create and the look-up
                conflict = _not_owned(kind.kind, namespace, name, snap.name)
                live = _owned(kube, path, owner_uid, conflict)
                log.info("adopting %s %s/%s: relabelled by someone", kind.kind, namespace, name)
                after = _send(kube, path, child, live, result)
        except ApiException as exc:
            result.requests += 1
            refusal = _refusal(exc, kind.kind, kind.api_version, kind.plural, namespace, name)
            if refusal is None:
                raise
            delay = memory.refused(namespace, identity, want, refusal)
            if kind.optional:
                log.warning("optional child not applied: %s", refusal)
                result.skipped.append(refusal)
                result.skipped_kinds[kind.kind] = refusal
                continue
            if exc.status == 404:
                raise ResourceNotInstalled(refusal, delay) from exc
            raise ChildRefused(refusal, delay) from exc
        memory.overlay.wrote(object_key(after), live, after)
        memory.remember(namespace, identity, Applied(want, managed_fields(after)))
        (result.patched if live is not None else result.created).append(identity)
    for obj in stale_children(snap, desired, owner_uid):
        identity = naming.child_identity(obj)
        kind = kind_of(obj)
        log.info("deleting %s %s/%s", kind.kind, namespace, identity[2])
        kube.delete(kind.path(namespace, identity[2]), uid=obj["metadata"].get("uid"))
        result.requests += 1
        memory.overlay.wrote(object_key(obj), obj, None)
        memory.remember(namespace, identity, None)
        result.deleted.append(identity)
    return result
