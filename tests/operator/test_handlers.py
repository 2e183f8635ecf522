"""The handlers' pure helpers: the status of a SpeechModel the operator cannot act on."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubescribe_operator import handlers, reconciler
from kubescribe_operator.cache import owner_name
from kubescribe_operator.rollout import status_patch
from kubescribe_operator.status import blocked_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_blocked_first_deployment_is_failed_and_stalled() -> None:
    status = blocked_status({}, 3, "ChildConflict", "Service x is in the way", NOW)
    assert status["observedGeneration"] == 3
    assert status["phase"] == "Failed"
    assert conditions(status) == {
        "Ready": ("False", "ChildConflict", "Service x is in the way"),
        "Reconciling": ("False", "ChildConflict", ""),
        "Stalled": ("True", "ChildConflict", "Service x is in the way"),
    }


def test_blocked_keeps_what_is_serving_and_is_idempotent() -> None:
    prev = {
        "observedGeneration": 1,
        "phase": "Ready",
        "currentVersion": "1.0",
        "lastKnownGood": {"uri": "s3://m/1.0", "version": "1.0"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready", "message": "",
             "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1},
            {"type": "Stalled", "status": "False", "reason": "Current", "message": "",
             "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1},
        ],
        "kopf": {"progress": {}},
    }  # fmt: skip
    status = blocked_status(prev, 2, "InvalidSpec", "bad", NOW)
    assert status["phase"] == "Degraded"
    assert status["currentVersion"] == "1.0"
    assert status["lastKnownGood"] == {"uri": "s3://m/1.0", "version": "1.0"}
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times["Ready"] == "2026-01-01T00:00:00Z"  # True -> False is a transition
    # Computing it again later from what was written changes nothing: no second write.
    again = blocked_status({**prev, **status}, 2, "InvalidSpec", "bad", NOW + timedelta(hours=1))
    assert status_patch({**prev, **status}, again) == {}


def test_owner_of_a_child_is_its_instance_label() -> None:
    labels = {"app.kubernetes.io/name": "kubescribe", "app.kubernetes.io/instance": "demo"}
    assert owner_name({"metadata": {"labels": labels}}) == "demo"
    assert owner_name({"metadata": {"labels": {"app.kubernetes.io/instance": "demo"}}}) is None
    assert owner_name({"metadata": {}}) is None


def test_child_events_that_find_a_reconcile_waiting_are_coalesced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of child events for one model while a reconcile runs costs one more reconcile,
    not one each (the waiting one snapshots the caches after the burst)."""
    runs: list[str] = []
    gate = threading.Event()

    def slow_reconcile(ctx: Any, snap: Any, *, trigger: str) -> None:
        runs.append(trigger)
        gate.wait(5)

    monkeypatch.setattr(handlers, "reconcile", slow_reconcile)
    ctx = reconciler.Context(kube=None)  # type: ignore[arg-type]

    async def burst() -> list[Any]:
        first = asyncio.create_task(handlers._reconcile(ctx, {}, "ns", "demo", "create"))
        await asyncio.sleep(0.05)  # the first one runs; the next waits; the rest coalesce
        events = [
            asyncio.create_task(
                handlers._reconcile(ctx, {}, "ns", "demo", "child_modified", coalesce=True)
            )
            for _ in range(5)
        ]
        other = asyncio.create_task(
            handlers._reconcile(ctx, {}, "ns", "other", "child_modified", coalesce=True)
        )
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(first, *events, other)

    asyncio.run(burst())
    assert runs == ["create", "child_modified", "child_modified"]  # demo twice, other once
    assert not ctx._waiting


def test_a_canary_step_end_wakes_the_model_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decision that names a time (a canary step's end) reconciles the model again then,
    without waiting for the resync; a later wake-up replaces an earlier one."""
    runs: list[str] = []

    def reconcile(ctx: Any, snap: Any, *, trigger: str) -> reconciler.Outcome:
        runs.append(trigger)
        soon = datetime.now(UTC) + timedelta(seconds=0.2)
        return reconciler.Outcome(0, 0, "Progressing", wake_at=soon if len(runs) < 3 else None)

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    ctx = reconciler.Context(kube=None)  # type: ignore[arg-type]

    async def story() -> None:
        await handlers._reconcile(ctx, {}, "ns", "demo", "create")
        await handlers._reconcile(ctx, {}, "ns", "demo", "resync")  # replaces the first
        assert len(ctx._wakeups) == 1
        for _ in range(200):  # bounded: 10 s
            if len(runs) == 3 and not ctx._wakeups:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the canary step's wake-up did not come: {runs}")

    asyncio.run(story())
    assert runs == ["create", "resync", "canary_step"]
