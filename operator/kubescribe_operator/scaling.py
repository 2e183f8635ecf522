"""Whether the HorizontalPodAutoscaler can scale: its conditions -> the SpeechModel's. Pure.

    hpa_health(hpa) -> ScalingHealth | None
    with_scaling_condition(status, prev, health, generation, now) -> (status, events)

With autoscaling on, the real HPA controller owns the Deployment's replicas. When it cannot
compute or apply a replica count (no metrics API or Prometheus adapter: `ScalingActive=False`,
`FailedGetResourceMetric`; the scale subresource unreadable: `AbleToScale=False`) the model keeps
serving on the replicas it has, so this is a warning, not a failure: the SpeechModel gets an
`AutoscalingActive` condition (False, with the HPA's reason and message) and a Warning Event
when it turns False; `Ready`, `Stalled`, `Reconciling` and the phase are left as the rollout
decided them. The condition is absent without autoscaling or before the HPA reports anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kubescribe_operator.status import Event, SpeechModelStatus, set_condition, turned

CONDITION: Final = "AutoscalingActive"
# The HPA's conditions that say it cannot scale when False, in the order they are reported.
HPA_CONDITIONS = ("AbleToScale", "ScalingActive")
MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class ScalingHealth:
    active: bool
    reason: str
    message: str


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def hpa_health(hpa: Mapping[str, Any] | None) -> ScalingHealth | None:
    """What the HPA says about its ability to scale (None: no HPA, or no verdict yet)."""
    if hpa is None:
        return None
    conditions: Sequence[Mapping[str, Any]] = (hpa.get("status") or {}).get("conditions") or []
    by_type = {str(c.get("type")): c for c in conditions}
    reported = [by_type[t] for t in HPA_CONDITIONS if t in by_type]
    if not reported:
        return None
    name = (hpa.get("metadata") or {}).get("name", "?")
    for c in reported:
        if c.get("status") == "False":
            reason = str(c.get("reason") or f"{c.get('type')}False")
            detail = c.get("message") or reason
            return ScalingHealth(
                False, reason, _short(f"HorizontalPodAutoscaler {name} cannot scale: {detail}")
            )
    if all(c.get("status") == "True" for c in reported):
        return ScalingHealth(True, "ScalingActive", f"HorizontalPodAutoscaler {name} can scale")
    return None  # Unknown: no verdict yet


def with_scaling_condition(
    status: Mapping[str, Any],
    prev: SpeechModelStatus | None,
    health: ScalingHealth | None,
    generation: int,
    now: datetime,
) -> tuple[dict[str, Any], tuple[Event, ...]]:
    """``status`` (a new status, wire form, as `rollout.decide` made it) with the
    `AutoscalingActive` condition set from ``health`` (removed when None), and the Event of a
    turn to False. ``prev`` is the stored status (for the condition's transition time)."""
    new = SpeechModelStatus.model_validate(status)
    if health is None:
        return set_condition(new, prev, CONDITION, None, now=now).dump(), ()
    events: tuple[Event, ...] = ()
    if not health.active and turned(prev, CONDITION, False):
        events = (Event("Warning", "AutoscalingInactive", health.message),)
    new = set_condition(new, prev, CONDITION, health.active, health.reason, health.message, now=now)
    return new.dump(), events
