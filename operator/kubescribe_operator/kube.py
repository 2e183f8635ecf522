"""The few raw Kubernetes API calls the operator makes (JSON in, JSON out), over the official
client: server-side apply of children, merge patches of the SpeechModel's ``/status``, deletes
of children no longer wanted, and Events. Reads come from watch caches (``cache.py``), not from
here.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from kubescribe_operator.api import GROUP, PLURAL, VERSION
from kubescribe_operator.kinds import FIELD_MANAGER

USER_AGENT = "kubescribe-operator"
APPLY_PATCH = "application/apply-patch+yaml"  # a JSON body is YAML too

Obj = dict[str, Any]


def speechmodel_path(namespace: str, name: str, subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"
    return f"{path}/{subresource}" if subresource else path


def server_message(exc: ApiException) -> tuple[str, str]:
    """(reason, message) of the API server's Status in an error answer."""
    try:
        status = json.loads(exc.body or "")
    except ValueError:
        status = None
    if not isinstance(status, dict):
        return str(exc.reason or exc.status), str(exc.body or exc.reason or "")
    return str(status.get("reason") or exc.reason), str(status.get("message") or exc.body)


class Kube:
    """Raw API calls as the operator's field manager."""

    def __init__(
        self,
        api: ApiClient,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        status_manager: str = FIELD_MANAGER,
    ) -> None:
        self.api = api
        self.status_manager = status_manager  # the release's own (overlap.py)
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

    def ready(self, timeout: float = 5.0) -> bool:
        """Whether the API server answers ``/readyz`` (any failure: False)."""
        try:
            m, url, hdrs, _, _ = self.api.param_serialize(
                "GET", "/readyz", header_params={"Accept": "text/plain"},
                auth_settings=["BearerToken"],
            )  # fmt: skip
            response = self.api.call_api(m, url, header_params=hdrs, _request_timeout=timeout)
            response.read()
            return 200 <= int(response.status) <= 299
        except Exception:
            return False

    def apply(
        self, path: str, body: Obj, *, manager: str = FIELD_MANAGER, new: bool = False
    ) -> Obj:
        """Server-side apply: ``body`` is the manager's whole intent for the object; fields it
        applied before and leaves out are removed (unless another manager owns them too).

        ``new``: the caller's cache shows no object of this name. Apply would take over one it
        does not show (someone else's), so a dry-run create asks first: 409 if the name is taken.
        """
        if new:
            collection = path.rsplit("/", 1)[0]
            self.request(
                "POST", collection, body=body, content_type="application/json",
                query=[("fieldManager", manager), ("fieldValidation", "Warn"), ("dryRun", "All")],
            )  # fmt: skip
        query = [("fieldManager", manager), ("force", "true"), ("fieldValidation", "Warn")]
        return self.request("PATCH", path, body=body, query=query, content_type=APPLY_PATCH)

    def get(self, path: str) -> Obj:
        """One object (only where the watch cache cannot answer: a relabelled child)."""
        return self.request("GET", path)

    def merge_patch(self, path: str, patch: Obj) -> Obj:
        """A merge patch of a SpeechModel's status, under the release's status manager."""
        return self.request(
            "PATCH", path, body=patch, query=[("fieldManager", self.status_manager)],
            content_type="application/merge-patch+json",
        )  # fmt: skip

    def create(self, path: str, body: Obj) -> Obj:
        return self.request(
            "POST", path, body=body, query=[("fieldManager", FIELD_MANAGER)],
            content_type="application/json",
        )  # fmt: skip

    def delete(self, path: str, uid: str | None = None) -> None:
        """Delete (in the background); ``uid`` makes sure it is the object the cache saw."""
        options: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        options["propagationPolicy"] = "Background"
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", path, body=options, content_type="application/json")
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or replaced by another object since
                raise


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
