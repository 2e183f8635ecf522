"""The operator's routing edge (``spec.routing``): the `Routed` condition and the catalogue.

The HTTPRoute itself is a child like the others (``builders`` -> ``apply``; an optional kind,
so a cluster without Gateway API's CRDs skips it instead of failing the model). Here:

- the `Routed` condition, from the route's ``status.parents[].conditions`` as each Gateway's
  controller wrote them (``httproute.route_health``). A warning, never readiness: the model
  serves through its Service whatever the Gateways say. False with ``GatewayAPIMissing`` when
  the cluster does not serve HTTPRoutes, ``GatewayNotFound`` when a parentRef's Gateway does not
  exist (looked up only while no controller reports on the route, at most once a minute per
  Gateway: no controller reports on a Gateway that is not there), the Gateway's own reason
  (``NotAllowedByListeners``, ``BackendNotFound``, ...) otherwise; a Warning Event when it turns
  False;
- the model's entry in its namespace's catalogue (``catalog.py``), applied when it changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from kubescribe_operator import catalog, httproute
from kubescribe_operator.cache import Snapshot
from kubescribe_operator.kube import Kube
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import Event, SpeechModelStatus, set_condition, turned

log = logging.getLogger(__name__)

CONDITION: Final = "Routed"
GATEWAY_RECHECK_SECONDS = 60.0


@dataclass
class RoutingMemory:
    """What the routing edge remembers between reconciles (thread-safe)."""

    _gateways: dict[tuple[str, str], tuple[float, bool | None]] = field(default_factory=dict)
    _catalog: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def gateway(self, key: tuple[str, str], now: float) -> tuple[bool, bool | None]:
        """(known recently, exists) for a Gateway."""
        with self._lock:
            entry = self._gateways.get(key)
        if entry is None or now - entry[0] > GATEWAY_RECHECK_SECONDS:
            return False, None
        return True, entry[1]

    def saw_gateway(self, key: tuple[str, str], now: float, exists: bool | None) -> None:
        with self._lock:
            self._gateways[key] = (now, exists)

    def catalog_digest(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            return self._catalog.get(key)

    def wrote_catalog(self, key: tuple[str, str], digest: str | None) -> None:
        with self._lock:
            if digest is None:
                self._catalog.pop(key, None)
            else:
                self._catalog[key] = digest


def _gateway_path(namespace: str, name: str) -> str:
    return (
        f"/apis/{httproute.GATEWAY_GROUP}/v1/namespaces/{quote(namespace)}/gateways/{quote(name)}"
    )


def missing_gateways(
    kube: Kube, memory: RoutingMemory, spec: SpeechModelSpec, namespace: str, route: Any
) -> tuple[list[tuple[str, str]], int]:
    """The parentRefs' Gateways that do not exist, among those no controller reports on; and
    the requests made. A Gateway the operator may not read (403) is not called missing."""
    routing = spec.routing
    if routing is None:
        return [], 0
    parents = ((route or {}).get("status") or {}).get("parents") or []
    reported = {httproute.parent_key(p.get("parentRef") or {}, namespace)[:2] for p in parents}
    missing, requests, now = [], 0, time.monotonic()
    for ref in routing.parent_refs:
        key = (ref.namespace or namespace, ref.name)
        if key in reported:
            continue
        known, exists = memory.gateway(key, now)
        if not known:
            requests += 1
            try:
                kube.get(_gateway_path(*key))
                exists = True
            except ApiException as exc:
                if exc.status not in (403, 404):
                    raise
                exists = False if exc.status == 404 else None
            memory.saw_gateway(key, now, exists)
        if exists is False:
            missing.append(key)
    return missing, requests


def _owned_route(snap: Snapshot, uid: str) -> dict[str, Any] | None:
    routes = snap.owned(httproute.KIND, uid)
    return next((r for r in routes if r["metadata"]["name"] == snap.name), None)


def health(
    kube: Kube,
    memory: RoutingMemory,
    snap: Snapshot,
    uid: str,
    spec: SpeechModelSpec,
    skipped: Mapping[str, str],
) -> tuple[httproute.RouteHealth | None, int]:
    """The `Routed` verdict (None: not routed) and the requests it took."""
    if spec.routing is None:
        return None, 0
    why = skipped.get(httproute.KIND)
    if why is not None:
        if "does not serve" in why:
            message = (
                "the cluster does not serve Gateway API HTTPRoutes "
                f"({httproute.API_VERSION}): install Gateway API's CRDs; the model serves "
                "through its Service meanwhile"
            )
            return httproute.RouteHealth(False, "GatewayAPIMissing", message), 0
        return httproute.RouteHealth(False, "RouteRefused", httproute.short(why)), 0
    route = _owned_route(snap, uid)
    missing, requests = missing_gateways(kube, memory, spec, snap.namespace, route)
    return httproute.route_health(route, spec.routing, snap.namespace, missing), requests


def with_routed_condition(
    status: Mapping[str, Any],
    prev: SpeechModelStatus | None,
    verdict: httproute.RouteHealth | None,
    now: datetime,
) -> tuple[dict[str, Any], tuple[Event, ...]]:
    """``status`` (wire form) with the `Routed` condition (removed without routing) and the
    Warning Event of a turn to False. Ready, the phase and the rest are left as they are."""
    new = SpeechModelStatus.model_validate(status)
    if verdict is None:
        return set_condition(new, prev, CONDITION, None, now=now).dump(), ()
    events: tuple[Event, ...] = ()
    if not verdict.routed and turned(prev, CONDITION, False):
        events = (Event("Warning", "NotRouted", verdict.message),)
    new = set_condition(
        new, prev, CONDITION, verdict.routed, verdict.reason, verdict.message, now=now
    )
    return new.dump(), events


def _configmap_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/configmaps/{catalog.CONFIGMAP}"


def sync_catalog(
    kube: Kube, memory: RoutingMemory, snap: Snapshot, uid: str, spec: SpeechModelSpec
) -> int:
    """Apply the model's catalogue entry when it changed (requests made). Not routed: its
    entry is taken away if it had one (this process wrote it, or its HTTPRoute still exists)."""
    key = (snap.namespace, snap.name)
    body = catalog.build_entry(snap.name, snap.namespace, uid, catalog.entry(snap.name, spec))
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if memory.catalog_digest(key) == digest:
        return 0
    never_routed = memory.catalog_digest(key) is None and _owned_route(snap, uid) is None
    if "data" not in body and never_routed:
        return 0  # (as far as can be seen): nothing to take away
    try:
        kube.apply(_configmap_path(snap.namespace), body, manager=catalog.field_manager(snap.name))
    except ApiException as exc:
        if exc.status not in (400, 403, 422):
            raise  # a conflict or a server error: retried with the reconcile
        # Refused for good (RBAC, admission): /v1/models lists less, the model still serves
        # and its status is still written. Tried again when the entry changes.
        log.warning("catalogue entry of %s/%s refused: %s %s", *key, exc.status, exc.reason)
    memory.wrote_catalog(key, digest)
    return 1


def forget(kube: Kube, namespace: str, name: str, spec: Mapping[str, Any]) -> None:
    """A deleted routed SpeechModel's entry leaves the catalogue (best effort). A merge patch,
    not an apply: it never creates the ConfigMap (a create in a namespace being deleted is a
    403) and leaves the ownerReference to the garbage collector; gone already: nothing to do."""
    if not spec.get("routing"):
        return
    try:
        kube.request(
            "PATCH", _configmap_path(namespace), body={"data": {f"{name}.json": None}},
            query=[("fieldManager", catalog.field_manager(name))],
            content_type="application/merge-patch+json",
        )  # fmt: skip
    except ApiException as exc:
        if exc.status != 404:
            log.warning("catalogue entry of %s/%s not removed: %s", namespace, name, exc.reason)
