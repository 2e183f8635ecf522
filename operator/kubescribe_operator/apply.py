"""Apply a SpeechModel's children and status: idempotent, one field manager, no needless writes.

Kubernetes API usage (the chart's least-privilege RBAC is derived from this table, and a test
compares them; keep both in step). ``(group, resource): verbs``:

    kubescribe.io       speechmodels                 get list watch patch   (patch: kopf's
                                                     finalizer in metadata, never the spec)
    kubescribe.io       speechmodels/status          patch
    apps                deployments                  get list watch create patch delete
    apps                replicasets                  list watch
    ""                  pods                         list watch
    ""                  services                     get list watch create patch delete
    autoscaling         horizontalpodautoscalers     get list watch create patch delete
    policy              poddisruptionbudgets         get list watch create patch delete
    monitoring.coreos.com servicemonitors            get list watch create patch delete
    ""                  events                       create
    kopf.dev            clusterkopfpeerings          get list watch patch   (--all-namespaces)
    kopf.dev            kopfpeerings                 get list watch patch   (--namespace)
    apiextensions.k8s.io customresourcedefinitions   list watch             (kopf's scanning)
    ""                  namespaces                   list watch             (kopf's scanning)

``API_USAGE`` below is the same table as data.

How a child is applied (compare-and-patch under one field manager, like ``kubectl apply``):

- absent: ``POST`` it with ``?fieldManager=kubescribe-operator``;
- present: compute a JSON merge patch from three inputs: the configuration last applied (kept
  in the ``kubescribe.io/last-applied`` annotation), the desired object and the live one.
  Desired fields that differ from live are set, fields the operator applied before and no longer
  wants are removed, and everything else (server defaults, fields other controllers own, status)
  is left alone. Lists are compared item by item and replaced whole when they differ
  (merge-patch semantics). An empty patch means **no request at all**, so a resync with nothing
  changed writes nothing. A non-empty patch carries the live ``resourceVersion``: a concurrent
  change answers 409 and the reconcile is retried on fresh state;
- with autoscaling on (the desired Deployment has no ``spec.replicas``) the Deployment's
  ``spec.replicas`` is never written, neither set nor removed: the HPA owns it;
- children of a kind the SpeechModel no longer needs (an HPA after autoscaling is turned off, a
  PDB at one replica) are deleted; objects not owned by the SpeechModel are never touched.

The SpeechModel itself is only ever patched on ``/status`` (GitOps owns the spec); kopf adds and
removes its finalizer in ``metadata.finalizers``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from kubescribe.errors import KubescribeError
from kubescribe_operator import builders
from kubescribe_operator.api import GROUP, PLURAL, VERSION

FIELD_MANAGER = builders.FIELD_MANAGER
LAST_APPLIED = "kubescribe.io/last-applied"
USER_AGENT = "kubescribe-operator"

Obj = dict[str, Any]
Identity = tuple[str, str, str]  # (apiVersion, kind, name)

API_USAGE: dict[tuple[str, str], frozenset[str]] = {
    (GROUP, PLURAL): frozenset({"get", "list", "watch", "patch"}),
    (GROUP, f"{PLURAL}/status"): frozenset({"patch"}),
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


class ResourceNotInstalled(ApplyError):
    """The cluster does not serve a child's kind (e.g. no ServiceMonitor CRD)."""


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str

    def collection(self, namespace: str) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        return f"{prefix}/namespaces/{quote(namespace)}/{self.plural}"

    def path(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{quote(name)}"


# Every kind the builders may produce; the ones a SpeechModel no longer needs are pruned.
CHILD_KINDS: dict[tuple[str, str], ChildKind] = {
    (k.api_version, k.kind): k
    for k in (
        ChildKind("v1", "Service", "services"),
        ChildKind("apps/v1", "Deployment", "deployments"),
        ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        ChildKind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
    )
}
DEPLOYMENT = CHILD_KINDS["apps/v1", "Deployment"]


def speechmodel_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


# ---------------------------------------------------------------------------- pure planning


def _is_quantity_key(key: str) -> bool:
    return key in ("limits", "requests")


def _same_quantity(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    try:
        return bool(parse_quantity(want) == parse_quantity(have))
    except (ValueError, TypeError, InvalidOperation):
        return False


def _is_zero(value: Any) -> bool:
    """The API server leaves zero values out of what it returns (``omitempty``)."""
    if isinstance(value, bool):
        return value is False
    return value is None or value in (0, "") or value == [] or value == {}


def same(want: Any, have: Any, *, quantities: bool = False) -> bool:
    """Whether live ``have`` already says what ``want`` says: fields the server added are
    ignored, and a zero value (``[]``, ``{}``, ``0``, ``false``, ``""``) equals an absent field."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            same(value, have[key], quantities=quantities or _is_quantity_key(key))
            if key in have
            else _is_zero(value)
            for key, value in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(same(w, h, quantities=quantities) for w, h in zip(want, have, strict=True))
        )
    if want == have and type(want) is type(have):
        return True
    if quantities and isinstance(want, str | int | Decimal):
        return _same_quantity(want, have)
    return False


def merge_patch(last: Mapping[str, Any] | None, want: Mapping[str, Any], have: Any) -> Obj:
    """A three-way JSON merge patch taking live ``have`` to ``want``; empty when it already is.

    ``last`` is what was applied before: keys in it and not in ``want`` are removed.
    """
    have_map: Mapping[str, Any] = have if isinstance(have, Mapping) else {}
    patch: Obj = {}
    for key, value in want.items():
        current = have_map.get(key)
        previous = (last or {}).get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            sub = merge_patch(previous if isinstance(previous, Mapping) else None, value, current)
            if sub:
                patch[key] = sub
        elif key not in have_map:
            if not _is_zero(value):
                patch[key] = value
        elif not same(value, current, quantities=_is_quantity_key(key)):
            patch[key] = value
    for key in last or {}:
        if key not in want and key in have_map:
            patch[key] = None
    return patch


def _strip_hpa_owned(obj: Mapping[str, Any] | None) -> Obj | None:
    if obj is None:
        return None
    spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "replicas"}
    return {**obj, "spec": spec}


def plan(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> Obj | None:
    """The request that takes ``live`` to ``desired``: a body to create (live is None), a merge
    patch, or None when there is nothing to do. Pure."""
    autoscaled = desired.get("kind") == "Deployment" and "replicas" not in (
        desired.get("spec") or {}
    )
    meta = desired.get("metadata") or {}
    applied = {
        **desired,
        "metadata": {
            **meta,
            "annotations": {**(meta.get("annotations") or {}), LAST_APPLIED: _encode(desired)},
        },
    }
    if live is None:
        return applied
    last = _decode(((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED))
    rv = (live.get("metadata") or {}).get("resourceVersion")
    if autoscaled:
        # The HPA owns spec.replicas: never set it, never remove it.
        last = _strip_hpa_owned(last)
        live = _strip_hpa_owned(live)
    patch = merge_patch(last, applied, live)
    if not patch:
        return None
    if rv:
        patch.setdefault("metadata", {})["resourceVersion"] = rv
    return patch


def _encode(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _decode(text: str | None) -> Obj | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def stale_children(
    existing: Iterable[Mapping[str, Any]], desired: Sequence[Mapping[str, Any]], uid: str
) -> list[Mapping[str, Any]]:
    """Existing children owned by ``uid`` that the desired set no longer has."""
    wanted = {builders.child_identity(dict(d)) for d in desired}
    return [
        obj
        for obj in existing
        if owned_by(obj, uid) and builders.child_identity(dict(obj)) not in wanted
    ]


# ---------------------------------------------------------------------------------- client


class Kube:
    """The few raw API calls the operator makes (JSON in, JSON out), over the official client."""

    def __init__(self, api: ApiClient, *, timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.api = api
        self.timeout = timeout  # (connect, read) seconds: a hung call must not hang a handler
        # Which replica made a request shows in the API server's audit log.
        self.api.user_agent = f"{USER_AGENT} ({socket.gethostname()}/{os.getpid()})"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> Obj:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        m, url, hdrs, data, _ = self.api.param_serialize(
            method,
            path,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            m, url, header_params=hdrs, body=data, _request_timeout=self.timeout
        )
        response.read()
        text = response.data.decode("utf-8") if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason, body=text)
        value = json.loads(text) if text else {}
        return value if isinstance(value, dict) else {}

    def get(self, path: str) -> Obj | None:
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, selector: Mapping[str, str]) -> list[Obj]:
        query = [("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(selector.items())))]
        items = self.request("GET", path, query=query).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def create(self, path: str, body: Obj) -> Obj:
        return self.request(
            "POST", path, body=body, query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/json",
        )  # fmt: skip

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        return self.request(
            "PATCH", path, body=patch, query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/merge-patch+json",
        )  # fmt: skip

    def delete(self, path: str) -> None:
        try:
            options = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "propagationPolicy": "Background",
            }
            self.request("DELETE", path, body=options, content_type="application/json")
        except ApiException as exc:
            if exc.status != 404:
                raise


# ------------------------------------------------------------------------------- applying


@dataclass
class ApplyResult:
    created: list[Identity] = field(default_factory=list)
    patched: list[Identity] = field(default_factory=list)
    deleted: list[Identity] = field(default_factory=list)
    live: dict[Identity, Obj] = field(default_factory=dict)

    @property
    def writes(self) -> int:
        return len(self.created) + len(self.patched) + len(self.deleted)


def _kind_of(obj: Mapping[str, Any]) -> ChildKind:
    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in CHILD_KINDS:
        raise ValueError(f"the operator does not manage {key[1]} ({key[0]}) children")
    return CHILD_KINDS[key]


def apply_children(
    kube: Kube, namespace: str, owner_name: str, owner_uid: str, desired: Sequence[Obj]
) -> ApplyResult:
    """Create or patch every desired child, then delete owned children no longer desired."""
    result = ApplyResult()
    for child in desired:
        kind = _kind_of(child)
        identity = builders.child_identity(child)
        name = child["metadata"]["name"]
        live = kube.get(kind.path(namespace, name))
        if live is not None and not owned_by(live, owner_uid):
            raise ChildConflict(
                f"{kind.kind} {namespace}/{name} exists and is not owned by SpeechModel "
                f"{owner_name}; delete or rename it"
            )
        request = plan(child, live)
        if request is None:
            result.live[identity] = live or {}
        elif live is None:
            log.info("creating %s %s/%s", kind.kind, namespace, name)
            try:
                result.live[identity] = kube.create(kind.collection(namespace), request)
            except ApiException as exc:
                if exc.status == 404:  # the resource itself is unknown to the cluster
                    raise ResourceNotInstalled(
                        f"cannot create {kind.kind} {namespace}/{name}: the cluster does not "
                        f"serve {kind.api_version} {kind.plural} (is its CRD installed?)"
                    ) from exc
                raise
            result.created.append(identity)
        else:
            log.info("patching %s %s/%s: %s", kind.kind, namespace, name, sorted(request))
            result.live[identity] = kube.merge_patch(kind.path(namespace, name), request)
            result.patched.append(identity)
    selector = {builders.LABEL_INSTANCE: owner_name, builders.LABEL_MANAGED_BY: FIELD_MANAGER}
    wanted_kinds = {(c["apiVersion"], c["kind"]) for c in desired}
    for key, kind in CHILD_KINDS.items():
        try:
            existing = kube.list(kind.collection(namespace), selector)
        except ApiException as exc:
            if exc.status == 404 and key not in wanted_kinds:
                continue  # e.g. the ServiceMonitor CRD is not installed
            raise
        for obj in stale_children(existing, desired, owner_uid):
            name = builders.child_identity(dict(obj))[2]
            log.info("deleting %s %s/%s", kind.kind, namespace, name)
            kube.delete(kind.path(namespace, name))
            result.deleted.append(builders.child_identity(dict(obj)))
    return result


def patch_status(kube: Kube, namespace: str, name: str, patch: Obj) -> Obj | None:
    """Merge-patch the SpeechModel's ``/status``; no request when the patch is empty."""
    if not patch:
        return None
    return kube.merge_patch(speechmodel_path(namespace, name, "status"), {"status": patch})


def post_event(kube: Kube, owner: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """Record a Kubernetes Event (core/v1) on the SpeechModel."""
    meta = owner.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'speechmodel')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    kube.create(f"/api/v1/namespaces/{quote(namespace)}/events", body)
