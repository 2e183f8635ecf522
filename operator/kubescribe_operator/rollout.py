"""The rollout decision: a pure function of what is wanted and what is observed.

    decide(spec, generation, status, observed, now) -> Decision

(`observed` is `kubescribe_operator.observe.observe(deployment, replicasets, pods)`.)

`Decision.model_ref` is the artifact the Deployment must run (the spec's model, or the status's
`lastKnownGood` after a failed rollout was rolled back), `Decision.status` the whole new
`.status` (a dict, wire form) and `Decision.events` the Kubernetes Events to emit, as
(type, reason, message). `status_patch(old, new)` turns it into a merge patch that is empty
when nothing changed, so a resync writes nothing.

Rules (issue 3, point 4):
- A change of the model's uri, version or sha256 starts a rollout: a history entry
  `InProgress`, `targetVersion` set, `Reconciling=True`, phase `Progressing` (`Pending` until
  the Deployment runs the model's pods). Pods that are created and not ready yet are progress,
  not a failure; so is a rollout of the pod template alone (no new model) that the Deployment
  reports as progressing within its deadline. `Degraded` is for a model that had rolled out
  and lost capacity since.
- Success (every replica updated and available, no old replica left): `currentVersion` =
  target, `lastKnownGood` = the model, `Ready=True`, the history entry `Succeeded`.
- Failure (the Deployment's progress deadline passed, or, faster, a new pod crash-loops, cannot
  pull its image, or its init container `kubescribe fetch` failed, e.g. a digest mismatch):
  `failedVersion` recorded and `Stalled=True`. With `autoRollback` and a `lastKnownGood` the
  Deployment goes back to it (reason `RolledBack`); that version is not tried again until the
  spec changes (a new `metadata.generation`). Without `autoRollback` nothing is rolled back.
  A first deployment that fails has nothing to go back to: phase `Failed`.
- Deterministic and idempotent: the same inputs give the same status, and feeding a decision's
  status back in gives the same status again and no events (only transitions emit events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kubescribe_operator import naming, quality_gate
from kubescribe_operator.api import ModelRef
from kubescribe_operator.observe import Assessment, Observed, Progress, assess
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import (
    MAX_HISTORY,
    POD_SECTIONS,
    ConditionType,
    Event,
    HistoryEntry,
    Phase,
    RolloutResult,
    SpeechModelStatus,
    set_condition,
    status_patch,
    timestamp,
)

__all__ = ["Decision", "Event", "decide", "status_patch"]


# ------------------------------------------------------------------------------- decide


@dataclass(frozen=True)
class Decision:
    model_ref: ModelRef  # what the Deployment must run
    status: dict[str, Any]  # the whole new .status, wire form
    events: tuple[Event, ...]
    rolled_back: bool = False  # model_ref is lastKnownGood, not the spec's model
    # The spec to render the children from: the spec itself, or after a rollback the spec with
    # its pod sections as they were when lastKnownGood served (the whole last good template).
    spec: SpeechModelSpec | None = None


def pod_sections(spec: SpeechModelSpec) -> dict[str, Any]:
    """The spec's sections that make the pod template, wire form (`lastKnownGoodSpec`)."""
    wire = spec.dump()
    return {key: wire[key] for key in POD_SECTIONS if key in wire}


def with_pod_sections(spec: SpeechModelSpec, sections: dict[str, Any] | None) -> SpeechModelSpec:
    """``spec`` with its pod sections replaced by ``sections`` (a rollback's template). A stored
    set that no longer validates (an older schema) leaves the spec's own sections."""
    if not sections:
        return spec
    wire = {key: value for key, value in spec.dump().items() if key not in POD_SECTIONS}
    try:
        return SpeechModelSpec.model_validate({**wire, **sections})
    except ValidationError:
        return spec


# A condition as (is it true, reason, message).
ConditionValue = tuple[bool, str, str]


@dataclass
class _Rollout:
    """The working state of one decision (private to `decide`)."""

    spec: SpeechModelSpec
    generation: int
    prev: SpeechModelStatus
    observed: Observed
    ts: str
    desired: ModelRef
    lkg: ModelRef | None
    lkg_spec: dict[str, Any] | None
    history: list[HistoryEntry]
    failed_model: ModelRef | None
    failed_generation: int | None
    events: list[Event] = field(default_factory=list)

    @property
    def failed_here(self) -> bool:
        """The spec's model was tried and found broken under this very spec."""
        return self.failed_model == self.desired and self.failed_generation == self.generation

    @property
    def can_roll_back(self) -> bool:
        return self.spec.rollout.auto_rollback and self.lkg is not None and self.lkg != self.desired

    @property
    def entry(self) -> HistoryEntry | None:
        return self.history[-1] if self.history else None

    @property
    def rolling_model(self) -> bool:
        return self.entry is not None and self.entry.result == "InProgress"

    def deploy(self) -> ModelRef:
        if self.failed_here and self.can_roll_back and self.lkg is not None:
            return self.lkg
        return self.desired

    def finish(self, result: RolloutResult, message: str | None = None) -> None:
        entry = self.history[-1]
        self.history[-1] = entry.model_copy(
            update={"result": result, "finished": self.ts, "message": message}
        )

    def record(self, result: RolloutResult, message: str | None = None) -> None:
        d = self.desired
        finished = None if result == "InProgress" else self.ts
        self.history.append(
            HistoryEntry(
                version=d.version,
                uri=d.uri,
                sha256=d.sha256,
                started=self.ts,
                finished=finished,
                result=result,
                message=message,
            )
        )


def decide(
    spec: SpeechModelSpec,
    generation: int,
    status: SpeechModelStatus | None,
    observed: Observed,
    now: datetime,
    *,
    name: str | None = None,
    namespace: str | None = None,
) -> Decision:
    """The next model to run, the new status and the events to emit. Pure.

    `name` and `namespace` (optional) fill `status.selector` and `status.endpoint`.
    """
    prev = status or SpeechModelStatus()
    state = _Rollout(
        spec=spec,
        generation=generation,
        prev=prev,
        observed=observed,
        ts=timestamp(now),
        desired=spec.model.ref(),
        lkg=prev.last_known_good,
        lkg_spec=prev.last_known_good_spec,
        history=list(prev.history),
        failed_model=prev.failed_model,
        failed_generation=prev.failed_generation,
    )
    _start_attempt(state)
    seen = _advance(state)
    deploy = state.deploy()
    conditions, phase = _conditions(state, deploy, seen)
    new_status = SpeechModelStatus(
        observed_generation=generation,
        phase=phase,
        current_version=(
            deploy.version if seen.progress is Progress.COMPLETE else prev.current_version
        ),
        target_version=state.desired.version,
        last_known_good=state.lkg,
        last_known_good_spec=state.lkg_spec if state.lkg is not None else None,
        failed_version=state.failed_model.version if state.failed_model else None,
        failed_model=state.failed_model,
        failed_generation=state.failed_generation,
        replicas=observed.replicas,
        ready_replicas=observed.ready_replicas,
        ready=f"{observed.ready_replicas}/{observed.desired_replicas}",
        updated_replicas=observed.updated_replicas,
        selector=naming.selector_string(name) if name else prev.selector,
        endpoint=naming.endpoint(name, namespace, spec) if name and namespace else prev.endpoint,
        history=state.history[-MAX_HISTORY:],
    )
    for type_, (flag, reason, message) in conditions.items():
        new_status = set_condition(new_status, prev, type_, flag, reason, message, now=now)
    stalled = conditions["Stalled"]
    before = prev.condition("Stalled")
    if stalled[1] == "RollbackFailed" and (before is None or before.reason != "RollbackFailed"):
        state.events.append(Event("Warning", "RollbackFailed", stalled[2]))
    rolled_back = deploy != state.desired
    render = with_pod_sections(spec, state.lkg_spec) if rolled_back else spec
    return Decision(
        model_ref=deploy,
        status=new_status.dump(),
        events=tuple(state.events),
        rolled_back=rolled_back,
        spec=render,
    )


def _start_attempt(state: _Rollout) -> None:
    """A model not yet being rolled out or serving (or a retry after a spec change) starts an
    attempt: a history entry `InProgress`, any recorded failure cleared."""
    if state.failed_here:
        return
    last, desired = state.entry, state.desired
    if last is not None and last.ref() == desired and last.result in ("InProgress", "Succeeded"):
        return
    if last is not None and last.result == "InProgress":
        state.finish("Superseded")
    state.record("InProgress")
    state.failed_model = state.failed_generation = None
    since = f" (replacing {state.lkg.version})" if state.lkg and state.lkg != desired else ""
    state.events.append(
        Event("Normal", "RolloutStarted", f"rolling out model version {desired.version}{since}")
    )


def _advance(state: _Rollout) -> Assessment:
    """Success or failure of the current attempt, as observed; returns the assessment of the
    model to deploy next (which is lastKnownGood right after a rollback)."""
    desired, observed = state.desired, state.observed
    seen = assess(observed, state.deploy())
    if state.rolling_model and seen.progress is Progress.FAILING:
        failure = f"model version {desired.version} failed: {seen.message}"
        state.failed_model, state.failed_generation = desired, state.generation
        state.events.append(Event("Warning", "RolloutFailed", failure))
        if seen.reason == quality_gate.REASON:  # loads and answers, transcribes badly
            state.events.append(Event("Warning", quality_gate.REASON, seen.message))
        if state.can_roll_back and state.lkg is not None:
            state.finish("RolledBack", seen.message)
            state.events.append(
                Event(
                    "Warning",
                    "RolledBack",
                    f"rolling back from model version {desired.version} to {state.lkg.version}",
                )
            )
            return assess(observed, state.lkg)
        state.finish("Failed", seen.message)
    elif state.rolling_model and seen.progress is Progress.COMPLETE:
        state.finish("Succeeded")
        state.lkg, state.lkg_spec = desired, pod_sections(state.spec)
        state.events.append(
            Event(
                "Normal",
                "RolloutSucceeded",
                f"model version {desired.version} is serving on "
                f"{observed.available_replicas} replica(s)",
            )
        )
    elif state.failed_here and state.deploy() == desired and seen.progress is Progress.COMPLETE:
        # Declared failed without a rollback, and the Deployment got there after all.
        state.record("Succeeded", "recovered after the rollout had been declared failed")
        state.failed_model = state.failed_generation = None
        state.lkg, state.lkg_spec = desired, pod_sections(state.spec)
        state.events.append(
            Event(
                "Normal",
                "RolloutSucceeded",
                f"model version {desired.version} recovered and is serving",
            )
        )
    return seen


def _conditions(
    state: _Rollout, deploy: ModelRef, seen: Assessment
) -> tuple[dict[ConditionType, ConditionValue], Phase]:
    """Ready / Reconciling / Stalled and the phase that follow from the attempt's state."""
    observed, desired = state.observed, state.desired
    ready_count = observed.ready_replicas
    if state.failed_here:
        failed = next((h for h in reversed(state.history) if h.ref() == desired), None)
        why = (failed.message if failed else None) or "it did not become ready"
        rolled_back = deploy != desired
        if rolled_back and seen.progress is Progress.FAILING:
            # The last good template fails now too: say so, never "rolled back" for ever.
            reason = "RollbackFailed"
            message = (
                f"model version {desired.version} failed ({why}); the rollback to model version "
                f"{deploy.version} fails too: {seen.message}"
            )
            return {
                "Ready": (ready_count > 0, reason, message),
                "Reconciling": (False, reason, ""),
                "Stalled": (True, reason, message),
            }, "Degraded" if ready_count > 0 else "Failed"
        if rolled_back:
            reason = "RolledBack"
            message = (
                f"model version {desired.version} failed ({why}); rolled back to model version "
                f"{deploy.version}; fix the artifact or change the spec to try again"
            )
        else:
            reason = "RolloutFailed"
            message = f"model version {desired.version} failed: {why}"
        rolling_back = rolled_back and seen.progress is not Progress.COMPLETE
        back = f"rolling back to model version {deploy.version}" if rolling_back else ""
        phase: Phase = "Failed" if state.lkg is None or ready_count == 0 else "Degraded"
        return {
            "Ready": (False, reason, message),
            "Reconciling": (rolling_back, "RollingBack" if rolling_back else reason, back),
            "Stalled": (True, reason, message),
        }, phase
    if seen.progress is Progress.COMPLETE or (
        # Every pod runs the model and some are not available yet: an HPA scale-up or lost
        # pods of a serving model, not a rollout, unless the model itself is still being rolled
        # out or the Deployment still rolls its pod template out (within its deadline).
        seen.progress is Progress.SCALING
        and not state.rolling_model
        and not observed.template_rolling
    ):
        available = observed.available_replicas
        serving = available > 0 or observed.desired_replicas == 0
        message = (
            f"model version {deploy.version} is ready on {available}/{observed.desired_replicas} "
            "replica(s)"
        ) + (f"; {seen.message}" if seen.message else "")
        return {
            "Ready": (serving, "Ready" if serving else "NoReplicaAvailable", message),
            "Reconciling": (False, "Current", ""),
            "Stalled": (False, "Current", ""),
        }, "Ready" if serving else "Degraded"
    if seen.progress is Progress.FAILING:
        # The model had rolled out fine; its pods fail now (no rollout to undo).
        return {
            "Ready": (ready_count > 0, seen.reason, seen.message),
            "Reconciling": (False, seen.reason, ""),
            "Stalled": (True, seen.reason, seen.message),
        }, "Degraded"
    reason = "RolloutInProgress" if state.rolling_model else "Updating"
    what = f"rolling out model version {desired.version}" if state.rolling_model else "updating"
    doing = f"{what}: {_progress_detail(observed, seen)}"
    current = state.prev.current_version
    serving = ready_count > 0 and current is not None
    first = state.lkg is None and current is None
    # Pending until the Deployment runs the model's pods; once they are created, starting
    # (fetching, loading) is progress, whether or not any is ready yet.
    pending = seen.progress in (Progress.ABSENT, Progress.PENDING)
    return {
        "Ready": (
            serving,
            "Ready" if serving else reason,
            f"model version {current} is serving ({_ready_by_version(state)})"
            if serving
            else doing,
        ),
        "Reconciling": (True, reason, doing),
        "Stalled": (False, reason, ""),
    }, "Pending" if first and pending else "Progressing"


def _ready_by_version(state: _Rollout) -> str:
    """Ready replicas per model version during a rollout, from the ReplicaSets."""
    refs = [ref for ref in (state.lkg, state.desired) if ref is not None]
    counts = {
        ref.version: state.observed.ready_by_ref[ref.digest()]
        for ref in refs
        if ref.digest() in state.observed.ready_by_ref
    }
    if not counts:
        return f"{state.observed.ready_replicas} replica(s) ready"
    return ", ".join(f"{n} replica(s) of {version} ready" for version, n in counts.items())


def _progress_detail(observed: Observed, seen: Assessment) -> str:
    if seen.progress is Progress.ABSENT:
        return "creating the Deployment"
    if seen.progress is Progress.PENDING:
        return "updating the Deployment"
    detail = (
        f"{observed.updated_replicas}/{observed.desired_replicas} replica(s) updated, "
        f"{observed.available_replicas} available"
    )
    return f"{detail}; {seen.message}" if seen.message else detail
