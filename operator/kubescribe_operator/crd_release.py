"""Deleting the SpeechModel CRD while the operator runs (issue 22.7).

The API server deletes every SpeechModel of a CRD being deleted and waits for them, but its
discovery no longer offers `patch` on them, and kopf stops serving a resource it cannot patch:
the operator never removed its finalizer and the CRD stayed `Terminating` for ever. So the
operator watches its CRD and, once it is marked for deletion, removes its finalizer from every
SpeechModel it watches (the API server still accepts that patch; all of them are going anyway,
and their children go by garbage collection). It retries while kopf, still serving the
resource for a moment, may put a finalizer back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import kopf
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.rest import ApiException

from kubescribe_operator.api import GROUP, PLURAL, VERSION
from kubescribe_operator.crd import CRD_NAME

log = logging.getLogger(__name__)
FINALIZER = "kubescribe.io/operator"  # kopf's, as handlers.settings_for names it
ATTEMPTS = 30
PAUSE_SECONDS = 2.0


def _held(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in items if FINALIZER in (i.get("metadata", {}).get("finalizers") or [])]


def release(api: ApiClient, namespaces: Sequence[str] | None) -> int:
    """Remove the operator's finalizer from every SpeechModel in `namespaces` (None: all);
    the number still holding it after this pass (0 when done)."""
    objects = CustomObjectsApi(api)
    if namespaces is None:
        lists = [objects.list_cluster_custom_object(GROUP, VERSION, PLURAL)]
    else:
        lists = [
            objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL) for ns in namespaces
        ]
    items = [item for listed in lists for item in cast(dict[str, Any], listed)["items"]]
    left = 0
    for item in _held(items):
        meta = item["metadata"]
        kept = [f for f in meta["finalizers"] if f != FINALIZER]
        patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
        try:
            objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch
            )
            log.info("released %s/%s: its CRD is being deleted", meta["namespace"], meta["name"])
        except ApiException as exc:
            if exc.status != 404:  # gone already: fine; a conflict: next pass
                left += 1
    return left


def register(
    registry: kopf.OperatorRegistry, api: ApiClient, namespaces: Sequence[str] | None
) -> None:
    """Watch the SpeechModel CRD; `namespaces`: the operator's (None: every namespace; names
    with a glob are not listed, as the operator's RBAC does not cover a cluster-wide list)."""
    exact = None if namespaces is None else [ns for ns in namespaces if "*" not in ns]

    @kopf.on.event(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions",
        registry=registry, when=lambda name, **_: name == CRD_NAME,
    )  # fmt: skip
    async def crd_event(body: kopf.Body, **_: Any) -> None:
        if not body.get("metadata", {}).get("deletionTimestamp"):
            return
        log.warning("the SpeechModel CRD is being deleted: releasing every SpeechModel")
        clean = 0  # passes in a row that found none to release: two end it
        for _attempt in range(ATTEMPTS):
            try:
                left = await asyncio.to_thread(release, api, exact)
            except ApiException as exc:
                if exc.status == 404:
                    return  # the CRD is gone
                left = 1
            clean = clean + 1 if left == 0 else 0
            if clean == 2:
                return
            await asyncio.sleep(PAUSE_SECONDS)  # kopf, still serving it, may add one back
