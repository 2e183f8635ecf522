"""Reads from watch caches: kopf's in-memory indexes, not a GET or LIST per child per reconcile.

kopf keeps one watch per kind (SpeechModels, and the operator's labelled Services, Deployments,
HPAs, PDBs, ServiceMonitors, ReplicaSets and pods) and calls the indexing functions below on
every event; each index maps ``(namespace, SpeechModel name)`` to the objects of that kind.
A reconcile takes a :class:`Snapshot` of one SpeechModel's objects from them (in kopf's event
loop, so no watch event changes an index while it is read) and works on that copy.

A watch cache lags behind the operator's own writes by one event. :class:`Overlay` bridges the
gap (read-your-writes): after a write it answers with the object the write returned until the
cache shows a newer version, so a reconcile that runs in between does not write again.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubescribe_operator import naming
from kubescribe_operator.kinds import (
    CHILD_KINDS,
    DEPLOYMENT,
    FIELD_MANAGER,
    PODS,
    REPLICASETS,
    ChildKind,
)

# (kinds.FIELD_MANAGER + "@": overlap.STATUS_MANAGER_PREFIX, without importing a higher layer)
STATUS_MANAGER_PREFIX = f"{FIELD_MANAGER}@"
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, SpeechModel name)
ObjectKey = tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)

# Index names (kopf passes each index to the handlers as a keyword argument of that name).
SPEECHMODELS = "speechmodels_index"


def index_name(kind: ChildKind) -> str:
    return f"{kind.plural}_index"


WATCHED_CHILDREN: tuple[ChildKind, ...] = (*CHILD_KINDS.values(), REPLICASETS, PODS)
INDEX_NAMES = (SPEECHMODELS, *(index_name(k) for k in WATCHED_CHILDREN))
# What a reconcile reads of each object; the rest (pod specs, ReplicaSet templates, other
# managers' field sets) is not kept, so the caches stay small at a thousand SpeechModels.
_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)


def owner_name(body: Mapping[str, Any]) -> str | None:
    """The SpeechModel a child belongs to, by its labels (None: not one of ours)."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    if labels.get(naming.LABEL_NAME) != "kubescribe":
        return None
    instance = labels.get(naming.LABEL_INSTANCE)
    return str(instance) if instance else None


def stored(body: Mapping[str, Any]) -> Obj:
    """A plain, private copy of what the operator reads of a watched object."""
    meta = body.get("metadata") or {}
    kept: Obj = {k: copy.deepcopy(meta[k]) for k in _META if k in meta}
    ours = [
        e
        for e in meta.get("managedFields") or []
        if e.get("manager") == FIELD_MANAGER
        # Which operator releases wrote a SpeechModel's status, and when (overlap.py).
        or str(e.get("manager") or "").startswith(STATUS_MANAGER_PREFIX)
    ]
    if ours:  # whether a child is intact (apply.is_intact, apply.handover)
        kept["managedFields"] = copy.deepcopy(ours)
    obj: Obj = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": kept}
    kind, spec = body.get("kind"), body.get("spec") or {}
    if kind == "SpeechModel":
        obj["spec"] = copy.deepcopy(spec)
    elif kind in (DEPLOYMENT.kind, REPLICASETS.kind):
        template = {"metadata": copy.deepcopy((spec.get("template") or {}).get("metadata") or {})}
        obj["spec"] = {"template": template}
        if "replicas" in spec:
            obj["spec"]["replicas"] = spec["replicas"]
    # (The HPA's status says whether it can scale: scaling.py; the HTTPRoute's whether the
    # Gateways route it: httproute.py.)
    if kind in (
        "SpeechModel",
        "HorizontalPodAutoscaler",
        "HTTPRoute",
        DEPLOYMENT.kind,
        REPLICASETS.kind,
        PODS.kind,
    ):
        obj["status"] = copy.deepcopy(body.get("status") or {})
    return obj


def index_speechmodel(namespace: str | None, name: str | None, body: Any) -> dict[Key, Obj]:
    return {(namespace or "default", str(name)): stored(body)}


def index_child(namespace: str | None, body: Any) -> dict[Key, Obj]:
    owner = owner_name(body)
    if owner is None or namespace is None:
        return {}
    return {(namespace, owner): stored(body)}


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        str(meta.get("namespace") or ""),
        str(meta.get("name")),
    )


def resource_version(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None


@dataclass(frozen=True)
class Snapshot:
    """One SpeechModel and the objects labelled as its children, as the watch caches hold them."""

    namespace: str
    name: str
    speechmodel: Obj | None
    children: dict[str, list[Obj]] = field(default_factory=dict)  # kind -> objects

    def of_kind(self, kind: str) -> list[Obj]:
        return self.children.get(kind, [])

    def owned(self, kind: str, uid: str) -> list[Obj]:
        return [obj for obj in self.of_kind(kind) if owned_by(obj, uid)]


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def _values(index: Any, key: Key) -> Iterable[Obj]:
    if index is None:
        return ()
    try:
        store = index[key]
    except KeyError:
        return ()
    return store if isinstance(store, Iterable) else ()


def snapshot(indexes: Mapping[str, Any], namespace: str, name: str) -> Snapshot:
    """Copy one SpeechModel's objects out of the indexes (call it in kopf's event loop)."""
    key = (namespace, name)
    models = list(_values(indexes.get(SPEECHMODELS), key))
    children = {
        kind.kind: [copy.deepcopy(obj) for obj in _values(indexes.get(index_name(kind)), key)]
        for kind in WATCHED_CHILDREN
    }
    return Snapshot(
        namespace=namespace,
        name=name,
        speechmodel=copy.deepcopy(models[0]) if models else None,
        children=children,
    )


def _older(rv: str | None, than: str | None) -> bool:
    """Whether version ``rv`` came before ``than``. resourceVersions are etcd revisions on
    every API server in practice; where one is not a number, no (the cache's object wins)."""
    if rv is None or than is None or not (rv.isdigit() and than.isdigit()):
        return False
    return int(rv) < int(than)


class Overlay:
    """Read-your-writes over the watch caches (thread-safe).

    ``wrote(before, after)`` records a write: ``before`` is the object as the cache showed it
    (None for a create), ``after`` what the server answered (None for a delete). ``view`` gives
    ``after`` while the cache still shows ``before`` or a version between the two (another
    writer's, e.g. kopf's own status bookkeeping, which the watch delivers first and which
    lacks the write), and the cache's object once it shows the write or anything newer.
    """

    def __init__(self) -> None:
        self._written: dict[ObjectKey, tuple[str | None, Obj | None]] = {}
        self._lock = threading.Lock()

    def wrote(self, key: ObjectKey, before: Obj | None, after: Obj | None) -> None:
        with self._lock:
            previous = self._written.get(key)
            # Two writes before the cache caught up: the cache still shows the first `before`.
            before_rv = previous[0] if previous is not None else resource_version(before)
            self._written[key] = (before_rv, stored(after) if after is not None else None)

    def view(self, key: ObjectKey, cached: Obj | None) -> Obj | None:
        with self._lock:
            entry = self._written.get(key)
            if entry is None:
                return cached
            before_rv, after = entry
            cached_rv = resource_version(cached)
            if cached_rv == before_rv or _older(cached_rv, resource_version(after)):
                return copy.deepcopy(after)
            del self._written[key]
            return cached

    def apply_to(self, snap: Snapshot, kinds: Callable[[str], bool] = lambda _: True) -> Snapshot:
        """The snapshot with this process's own recent writes in it."""
        model = snap.speechmodel
        if model is not None:
            model = self.view(object_key(model), model)
        children: dict[str, list[Obj]] = {}
        for kind, objs in snap.children.items():
            if not kinds(kind):
                children[kind] = objs
                continue
            seen = {object_key(o): o for o in objs}
            with self._lock:  # the children the operator writes are named after their model
                pending = [k for k in self._written if k[1:] == (kind, snap.namespace, snap.name)]
            merged = []
            for key in dict.fromkeys([*seen, *pending]):
                obj = self.view(key, seen.get(key))
                if obj is not None and owner_name(obj) == snap.name:
                    merged.append(obj)
            children[kind] = merged
        return Snapshot(snap.namespace, snap.name, model, children)
