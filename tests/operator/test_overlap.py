"""Overlapping operator releases (finding 22.8): who wrote a SpeechModel's status, and when."""

from __future__ import annotations

from typing import Any

from kubescribe_operator import cache, overlap


def model(*writes: tuple[str, str], generation: int = 1, observed: int = 1) -> dict[str, Any]:
    entries = [
        {
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "time": "2026-01-01T12:09:00Z",
        },
        *(
            {
                "manager": manager,
                "operation": "Update",
                "subresource": "status",
                "time": time,
            }
            for manager, time in writes
        ),
    ]
    return {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": "demo", "namespace": "ns", "generation": generation,
                     "managedFields": entries},
        "status": {"observedGeneration": observed},
    }  # fmt: skip


A, B = overlap.status_manager("team-a"), overlap.status_manager("cluster")


def test_a_release_whose_write_is_older_than_anothers_leaves_the_model() -> None:
    body = model((A, "2026-01-01T12:00:00Z"), (B, "2026-01-01T12:00:05Z"))
    assert overlap.newer_writer(body, "team-a") == "cluster"
    assert overlap.newer_writer(body, "cluster") is None  # the newest writer goes on


def test_a_stale_entry_of_a_removed_release_makes_nobody_yield() -> None:
    # Only a release that has written itself can tell the other is alive: its own write is newer.
    assert overlap.newer_writer(model((A, "2026-01-01T11:00:00Z")), "cluster") is None
    body = model((A, "2026-01-01T11:00:00Z"), (B, "2026-01-01T12:00:00Z"))
    assert overlap.newer_writer(body, "cluster") is None


def test_the_watch_cache_keeps_the_release_status_writers() -> None:
    body = model((A, "2026-01-01T12:00:00Z"))
    kept = cache.stored(body)
    assert [e["manager"] for e in kept["metadata"]["managedFields"]] == [A]
    assert overlap.newer_writer(kept, "team-a") is None


def test_an_unobserved_generation_is_seen() -> None:
    assert overlap.unobserved(model(generation=3, observed=2))
    assert not overlap.unobserved(model(generation=3, observed=3))
