"""status.py: conditions set in one place (issue 22, deliver 6) and the optional children's
warning condition (finding 22.5). Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kubescribe_operator.status import (
    SpeechModelStatus,
    blocked_status,
    set_condition,
    with_optional_children,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
READY = {"observedGeneration": 2, "phase": "Ready", "currentVersion": "1.0", "conditions": []}


def test_set_condition_keeps_the_transition_time_while_the_value_stays() -> None:
    first = set_condition(
        SpeechModelStatus(observed_generation=2), None, "Ready", True, "Ready", "", now=T0
    )
    later = T0 + timedelta(minutes=5)
    same = set_condition(first, first, "Ready", True, "Ready", "other words", now=later)
    (kept,) = same.conditions
    assert kept.last_transition_time == "2026-01-01T12:00:00Z" and kept.message == "other words"
    assert kept.observed_generation == 2
    flipped = set_condition(first, first, "Ready", False, "RolledBack", "", now=later)
    assert flipped.conditions[0].last_transition_time == "2026-01-01T12:05:00Z"
    assert set_condition(first, first, "Ready", None, now=later).conditions == []


def test_a_missing_service_monitor_is_a_warning_not_a_failure() -> None:
    status, events = with_optional_children(
        READY, None, True, "cannot apply ServiceMonitor", "ResourceNotInstalled", T0
    )
    assert status["phase"] == "Ready" and status["currentVersion"] == "1.0"
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "OptionalChildrenApplied",
        "False",
        "ResourceNotInstalled",
    )
    assert [e.reason for e in events] == ["ResourceNotInstalled"]
    prev = SpeechModelStatus.model_validate(status)
    again, events = with_optional_children(
        READY, prev, True, "cannot apply ServiceMonitor", "ResourceNotInstalled", T0
    )
    assert again == status and events == ()  # once, on the turn
    applied, _ = with_optional_children(READY, prev, True, "", "", T0)
    assert applied["conditions"][0]["status"] == "True"
    none, _ = with_optional_children(READY, prev, False, "", "", T0)
    assert none["conditions"] == []


def test_blocked_status_keeps_the_rest_and_is_stalled() -> None:
    blocked = blocked_status(READY, 3, "ChildConflict", "in the way", T0)
    assert blocked["phase"] == "Degraded" and blocked["currentVersion"] == "1.0"
    by_type = {c["type"]: (c["status"], c["reason"]) for c in blocked["conditions"]}
    assert by_type == {
        "Ready": ("False", "ChildConflict"),
        "Reconciling": ("False", "ChildConflict"),
        "Stalled": ("True", "ChildConflict"),
    }
