"""cache.py: the watch-cache snapshot of one SpeechModel, and read-your-writes over it."""

from __future__ import annotations

from typing import Any

from kubescribe_operator import cache

Obj = dict[str, Any]
LABELS = {"app.kubernetes.io/name": "kubescribe", "app.kubernetes.io/instance": "demo"}


def obj(kind: str, name: str = "demo", rv: str = "1", **meta: Any) -> Obj:
    api = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1"}.get(kind, "v1")
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": LABELS,
            "managedFields": [{"manager": "x"}],
            **meta,
        },
    }


class Store(list[Obj]):
    """Stands in for a kopf index's store (an iterable of the indexed values)."""


def indexes(*objs: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in objs:
        name = (
            cache.SPEECHMODELS
            if o["kind"] == "SpeechModel"
            else next(cache.index_name(k) for k in cache.WATCHED_CHILDREN if k.kind == o["kind"])
        )
        key, value = next(iter(cache.index_child("ns", o).items()))
        out.setdefault(name, {}).setdefault(key, Store()).append(value)
    return out


def test_children_are_indexed_by_their_speechmodel_keeping_what_a_reconcile_reads() -> None:
    pod = obj("Pod", "demo-1", managedFields=[{"manager": "kubelet"}])
    pod["spec"] = {"containers": [{"name": "runtime"}]}
    pod["status"] = {"phase": "Running"}
    ((key, kept),) = cache.index_child("ns", pod).items()
    assert key == ("ns", "demo") and kept["metadata"]["name"] == "demo-1"
    assert kept["status"] == {"phase": "Running"}
    assert "spec" not in kept and "managedFields" not in kept["metadata"]  # not read
    deployment = obj(
        "Deployment",
        managedFields=[{"manager": "kubescribe-operator", "operation": "Apply"}, {"manager": "x"}],
    )
    deployment["spec"] = {"replicas": 2, "template": {"metadata": {"a": 1}, "spec": {"big": 1}}}
    kept = cache.index_child("ns", deployment)["ns", "demo"]
    assert kept["spec"] == {"replicas": 2, "template": {"metadata": {"a": 1}}}
    assert [e["manager"] for e in kept["metadata"]["managedFields"]] == ["kubescribe-operator"]
    assert cache.index_child("ns", {"metadata": {"labels": {}}}) == {}
    hpa = obj("HorizontalPodAutoscaler")
    hpa["status"] = {"conditions": [{"type": "ScalingActive", "status": "False"}]}
    kept = cache.index_child("ns", hpa)["ns", "demo"]
    assert kept["status"] == hpa["status"]  # whether it can scale (scaling.py)


def test_snapshot_copies_one_models_objects() -> None:
    idx = indexes(obj("Deployment"), obj("Pod", "demo-1"), obj("Pod", "demo-2"))
    snap = cache.snapshot(idx, "ns", "demo")
    assert [p["metadata"]["name"] for p in snap.of_kind("Pod")] == ["demo-1", "demo-2"]
    assert snap.of_kind("Service") == [] and snap.speechmodel is None
    snap.of_kind("Pod")[0]["metadata"]["name"] = "changed"
    assert cache.snapshot(idx, "ns", "demo").of_kind("Pod")[0]["metadata"]["name"] == "demo-1"
    assert cache.snapshot(idx, "ns", "other").of_kind("Pod") == []


def test_overlay_answers_with_the_write_until_the_cache_moves_on() -> None:
    overlay = cache.Overlay()
    before, after = obj("Deployment", rv="5"), obj("Deployment", rv="6")
    after["spec"] = {"replicas": 3}
    key = cache.object_key(before)
    overlay.wrote(key, before, after)
    assert overlay.view(key, before) == cache.stored(after)  # the cache still shows the old one
    newer = obj("Service", rv="9")
    assert overlay.view(key, newer) == newer  # the cache caught up (or someone wrote since)
    assert overlay.view(key, before) == before  # and the write is forgotten


def test_overlay_keeps_the_write_over_an_older_version_of_another_writer() -> None:
    """Someone else (kopf's own status bookkeeping) wrote between the cached version and the
    operator's write: the watch delivers that version first, and it lacks the write."""
    overlay = cache.Overlay()
    before, after = obj("SpeechModel", rv="5"), obj("SpeechModel", rv="7")
    after["status"] = {"history": [{"version": "2.0", "result": "InProgress"}]}
    key = cache.object_key(before)
    overlay.wrote(key, before, after)
    assert overlay.view(key, obj("SpeechModel", rv="6")) == cache.stored(after)
    assert overlay.view(key, after) == after  # the cache caught up


def test_overlay_shows_creates_and_deletes_in_a_snapshot() -> None:
    overlay = cache.Overlay()
    created, deleted = obj("Service", rv="2"), obj("Deployment", rv="3")
    overlay.wrote(cache.object_key(created), None, created)
    overlay.wrote(cache.object_key(deleted), deleted, None)
    snap = overlay.apply_to(cache.snapshot(indexes(deleted), "ns", "demo"))
    assert snap.of_kind("Service") == [cache.stored(created)]
    assert snap.of_kind("Deployment") == []


def test_another_models_snapshot_leaves_a_pending_write_alone() -> None:
    overlay = cache.Overlay()
    before, after = obj("Service", rv="5"), obj("Service", rv="6")
    overlay.wrote(cache.object_key(before), before, after)
    other = cache.snapshot(indexes(), "ns", "other")
    assert overlay.apply_to(other).of_kind("Service") == []
    snap = overlay.apply_to(cache.snapshot(indexes(before), "ns", "demo"))
    assert snap.of_kind("Service") == [cache.stored(after)]
