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


STARTED = "2026-01-01T12:00:00Z"  # this process's start


def test_of_two_live_releases_the_one_that_sorts_last_leaves_the_model() -> None:
    body = model((A, "2026-01-01T12:00:01Z"), (B, "2026-01-01T12:00:05Z"))
    assert overlap.leaves_to(body, "team-a", STARTED) == "cluster"
    assert overlap.leaves_to(body, "cluster", STARTED) is None  # "cluster" sorts first: acts
    # It needs no write of its own: the other's write since it started tells it all.
    assert overlap.leaves_to(model((B, "2026-01-01T12:00:05Z")), "team-a", STARTED) == "cluster"


def test_an_entry_of_a_release_removed_before_the_start_makes_nobody_yield() -> None:
    body = model((B, "2026-01-01T11:00:00Z"), (A, "2026-01-01T12:00:05Z"))
    assert overlap.leaves_to(body, "team-a", STARTED) is None


def test_the_watch_cache_keeps_the_release_status_writers() -> None:
    body = model((A, "2026-01-01T12:00:00Z"))
    kept = cache.stored(body)
    assert [e["manager"] for e in kept["metadata"]["managedFields"]] == [A]
    assert overlap.status_writes(kept) == {"team-a": "2026-01-01T12:00:00Z"}


def test_an_unobserved_generation_is_seen() -> None:
    assert overlap.unobserved(model(generation=3, observed=2))
    assert not overlap.unobserved(model(generation=3, observed=3))
