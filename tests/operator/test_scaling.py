"""The HPA's verdict on scaling in the SpeechModel's status (kubescribe_operator.scaling).

An HPA that cannot scale (no metrics API: `ScalingActive=False`) is a warning on a serving model:
an `AutoscalingActive=False` condition and one Warning Event, while Ready, Stalled, Reconciling
and the phase stay what the rollout decided. The live counterpart, with the real HPA
controller, is tests/operator/test_autoscaling_live.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubescribe_operator.api import ModelRef
from kubescribe_operator.observe import Observed
from kubescribe_operator.rollout import decide, status_patch
from kubescribe_operator.scaling import (
    CONDITION,
    ScalingHealth,
    hpa_health,
    with_scaling_condition,
)
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import SpeechModelStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REF = ModelRef(uri="s3://models/demo/1.0", version="1.0")
NO_METRICS = (
    "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to "
    "get metrics for resource cpu: no metrics returned from resource metrics API"
)


def hpa(*conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo"},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ]
        },
    }


ABLE = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
ACTIVE = ("ScalingActive", "True", "ValidMetricFound", "the HPA was able to compute the count")
LIMITED = ("ScalingLimited", "True", "TooFewReplicas", "the desired replica count is less")


@pytest.mark.parametrize(
    ("hpa_obj", "expected"),
    [
        pytest.param(None, None, id="no-hpa"),
        pytest.param(hpa(), None, id="no-conditions-yet"),
        pytest.param(hpa(LIMITED), None, id="only-scaling-limited"),
        pytest.param(
            hpa(ABLE, ("ScalingActive", "Unknown", "", "")), None, id="scaling-active-unknown"
        ),
        pytest.param(
            hpa(ABLE, ACTIVE, LIMITED),
            ScalingHealth(True, "ScalingActive", "HorizontalPodAutoscaler demo can scale"),
            id="active-at-its-limit",
        ),
        pytest.param(
            hpa(ABLE, ("ScalingActive", "False", "FailedGetResourceMetric", NO_METRICS)),
            ScalingHealth(
                False,
                "FailedGetResourceMetric",
                f"HorizontalPodAutoscaler demo cannot scale: {NO_METRICS}",
            ),
            id="no-metrics-api",
        ),
        pytest.param(
            hpa(("AbleToScale", "False", "FailedGetScale", "deployments/scale forbidden"), ACTIVE),
            ScalingHealth(
                False,
                "FailedGetScale",
                "HorizontalPodAutoscaler demo cannot scale: deployments/scale forbidden",
            ),
            id="scale-unreadable",
        ),
    ],
)
def test_hpa_health_reads_able_to_scale_and_scaling_active(
    hpa_obj: dict[str, Any] | None, expected: ScalingHealth | None
) -> None:
    assert hpa_health(hpa_obj) == expected


def serving_status() -> dict[str, Any]:
    spec = SpeechModelSpec.model_validate(
        {"model": {"uri": REF.uri, "version": REF.version}, "replicas": 2}
    )
    ready = Observed(
        deployment_exists=True,
        template_ref=REF.digest(),
        template_observed=True,
        desired_replicas=2,
        replicas=2,
        updated_replicas=2,
        ready_replicas=2,
        available_replicas=2,
        ready_by_ref={REF.digest(): 2},
    )
    first = decide(spec, 1, None, ready, NOW, name="demo", namespace="ns")
    again = decide(spec, 1, SpeechModelStatus.model_validate(first.status), ready, NOW)
    return again.status


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


INACTIVE = ScalingHealth(False, "FailedGetResourceMetric", "cannot scale: " + NO_METRICS)


def test_an_hpa_that_cannot_scale_is_a_warning_not_unreadiness() -> None:
    before = serving_status()
    status, events = with_scaling_condition(before, None, INACTIVE, 1, NOW)
    assert status["phase"] == before["phase"] == "Ready"
    conditions = by_type(status)
    assert {t: c["status"] for t, c in conditions.items()} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        CONDITION: "False",
    }
    assert conditions[CONDITION]["reason"] == "FailedGetResourceMetric"
    assert conditions[CONDITION]["message"] == INACTIVE.message
    assert [(e.type, e.reason) for e in events] == [("Warning", "AutoscalingInactive")]
    # Everything but the new condition is the rollout's status, untouched.
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        k: v for k, v in before.items() if k != "conditions"
    }
    assert [c for c in status["conditions"] if c["type"] != CONDITION] == before["conditions"]


def test_the_warning_is_idempotent_and_keeps_its_transition_time() -> None:
    stored, _ = with_scaling_condition(serving_status(), None, INACTIVE, 1, NOW)
    later = NOW + timedelta(minutes=5)
    prev = SpeechModelStatus.model_validate(stored)
    again, events = with_scaling_condition(serving_status(), prev, INACTIVE, 1, later)
    assert events == ()
    assert status_patch(stored, again) == {}  # a resync writes nothing
    # Able to scale again (a metrics API installed): True, a new transition, no Warning.
    active = ScalingHealth(True, "ScalingActive", "HorizontalPodAutoscaler demo can scale")
    healed, events = with_scaling_condition(serving_status(), prev, active, 1, later)
    assert events == ()
    assert by_type(healed)[CONDITION]["status"] == "True"
    assert by_type(healed)[CONDITION]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_without_autoscaling_the_condition_goes() -> None:
    stored, _ = with_scaling_condition(serving_status(), None, INACTIVE, 1, NOW)
    prev = SpeechModelStatus.model_validate(stored)
    status, events = with_scaling_condition(serving_status(), prev, None, 2, NOW)
    assert CONDITION not in by_type(status) and events == ()
    assert status_patch(stored, status)["conditions"] == status["conditions"]
