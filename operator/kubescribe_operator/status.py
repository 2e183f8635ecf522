"""Contract 1, the status: what the operator writes on a SpeechModel (kstatus conventions), and
the status logic every part shares. Pure.

`SpeechModelStatus.model_validate(body["status"])` reads it back; the CRD's status schema is
generated from these models too (`kubescribe_operator.crd`). The rollout (`rollout.decide`)
makes the Ready / Reconciling / Stalled conditions, the HPA's verdict (`scaling`) and the
optional children (`handlers`) add theirs; every condition is set through `set_condition`, the
one place that decides its `lastTransitionTime`. `blocked_status` is the status of a model the
operator cannot act on; `status_patch` the merge patch that writes a new status (empty when
nothing changed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import ConfigDict, Field

from kubescribe_operator.api import ApiModel, ModelRef
from kubescribe_operator.canary_state import CanaryStatus

MAX_HISTORY = 10

# Ready, Reconciling and Stalled (kstatus) from the rollout. Warnings, never readiness:
# AutoscalingActive from the HPA (only with autoscaling on, `scaling`); OptionalChildrenApplied
# when a child the model serves without (a ServiceMonitor) cannot be applied; Routed from the
# Gateways' verdict on its HTTPRoute (only with spec.routing, `routing`).
ConditionType = Literal[
    "Ready", "Reconciling", "Stalled", "AutoscalingActive", "OptionalChildrenApplied", "Routed"
]
Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
# Aborted: a canary stopped (analysis breach, failing pods, reverted) before it was promoted.
RolloutResult = Literal["InProgress", "Succeeded", "Failed", "RolledBack", "Superseded", "Aborted"]
# The spec's sections that make the pod template; a rollback restores them all as they were
# when lastKnownGood last served (`lastKnownGoodSpec`), not only the model.
POD_SECTIONS = ("model", "runtime", "scheduling", "pod")


class Event(NamedTuple):
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(ApiModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class HistoryEntry(ApiModel):
    version: str
    uri: str
    sha256: str | None = None
    started: str
    finished: str | None = None
    result: RolloutResult
    message: str | None = None

    def ref(self) -> ModelRef:
        return ModelRef(uri=self.uri, version=self.version, sha256=self.sha256)


class SpeechModelStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")  # kopf keeps its own keys under status

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    phase: Phase | None = None
    current_version: str | None = None
    target_version: str | None = None
    last_known_good: ModelRef | None = None
    last_known_good_spec: dict[str, Any] | None = Field(
        default=None,
        description="the spec's pod sections (model, runtime, scheduling, pod) when "
        "lastKnownGood last served: what a rollback restores",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    failed_version: str | None = None
    failed_model: ModelRef | None = Field(
        default=None, description="the model ref that failed; not retried until the spec changes"
    )
    failed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    ready: str | None = Field(
        default=None, description="ready/desired replicas, as kubectl get shows them (READY)"
    )
    updated_replicas: int | None = None
    selector: str | None = None
    endpoint: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)
    canary: CanaryStatus | None = Field(
        default=None, description="the canary under way (rollout.strategy Canary)"
    )

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


def set_condition(
    status: SpeechModelStatus,
    prev: SpeechModelStatus | None,
    type_: ConditionType,
    flag: bool | None,
    reason: str = "",
    message: str = "",
    *,
    now: datetime,
) -> SpeechModelStatus:
    """``status`` with condition ``type_`` set (removed when ``flag`` is None). Its
    lastTransitionTime is the stored one (``prev``'s) while the value stays, else ``now``; its
    observedGeneration is the status's."""
    if flag is None:
        kept = [c for c in status.conditions if c.type != type_]
        return status.model_copy(update={"conditions": kept})
    value: Literal["True", "False"] = "True" if flag else "False"
    old = prev.condition(type_) if prev is not None else None
    since = old.last_transition_time if old is not None and old.status == value else timestamp(now)
    condition = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=status.observed_generation,
    )
    conditions = [condition if c.type == type_ else c for c in status.conditions]
    if not any(c.type == type_ for c in status.conditions):
        conditions.append(condition)
    return status.model_copy(update={"conditions": conditions})


def turned(prev: SpeechModelStatus | None, type_: ConditionType, flag: bool) -> bool:
    """Whether condition ``type_`` turns to ``flag`` now (it was absent or the other way)."""
    old = prev.condition(type_) if prev is not None else None
    return old is None or old.status != ("True" if flag else "False")


def with_optional_children(
    new: Mapping[str, Any],
    prev: SpeechModelStatus | None,
    wanted: bool,
    skipped: str,
    reason: str,
    now: datetime,
) -> tuple[dict[str, Any], tuple[Event, ...]]:
    """``new`` (wire form) with the `OptionalChildrenApplied` condition: False (a warning, with a
    Warning Event of ``reason`` when it turns) while an optional child (a ServiceMonitor) could
    not be applied (``skipped``: why), True once it is; absent when the spec asks for none
    (``wanted``). Readiness and the phase are left as they are."""
    status = SpeechModelStatus.model_validate(new)
    type_: ConditionType = "OptionalChildrenApplied"
    if not wanted:
        return set_condition(status, prev, type_, None, now=now).dump(), ()
    if not skipped:
        message = "every optional child is applied"
        return set_condition(status, prev, type_, True, "Applied", message, now=now).dump(), ()
    events = (Event("Warning", reason, skipped),) if turned(prev, type_, False) else ()
    return set_condition(status, prev, type_, False, reason, skipped, now=now).dump(), events


def blocked_status(
    prev: Mapping[str, Any], generation: int, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The status of a SpeechModel the operator cannot act on (invalid spec, a child refused):
    Stalled, not Ready, not Reconciling; the rest of the status is kept. Wire form."""
    old = SpeechModelStatus.model_validate(prev) if prev else SpeechModelStatus()
    new = old.model_copy(
        update={
            "observed_generation": generation,
            "phase": "Degraded" if old.current_version else "Failed",
            "conditions": [],
        }
    )
    blocked: tuple[tuple[ConditionType, bool, str], ...] = (
        ("Ready", False, message),
        ("Reconciling", False, ""),
        ("Stalled", True, message),
    )
    for type_, flag, text in blocked:
        new = set_condition(new, old, type_, flag, reason, text, now=now)
    return new.dump()


STATUS_FIELDS = tuple(field.alias or name for name, field in SpeechModelStatus.model_fields.items())


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from `old` to `new` for the fields this module owns.

    Empty when nothing changed (a resync writes nothing); a field gone from `new` is set to None
    (merge-patch deletion); keys other controllers keep under `.status` (e.g. kopf's) are left.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key in STATUS_FIELDS:
        if key in new:
            if old.get(key) != new[key]:
                patch[key] = new[key]
        elif old.get(key) is not None:
            patch[key] = None
    return patch
