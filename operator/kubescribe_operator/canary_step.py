"""One move of a running canary and the status that describes it: the helpers of
`kubescribe_operator.canary` (whose docstring has the rules). Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from kubescribe_operator import rollout
from kubescribe_operator.api import ModelRef
from kubescribe_operator.canary_children import CanaryPlan, share
from kubescribe_operator.canary_state import CanaryState, CanaryStatus
from kubescribe_operator.observe import Observed, Progress, assess
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import (
    MAX_HISTORY,
    Event,
    HistoryEntry,
    SpeechModelStatus,
    set_condition,
    timestamp,
)

# How soon a step whose metrics could not be read is judged again.
ANALYSIS_RETRY_SECONDS = 15
# The Reconciling condition's reason while a canary runs (Argo CD: Progressing); an abort is
# Stalled with reason "CanaryAborted".
CONDITION_REASONS: dict[CanaryState, str] = {
    "Starting": "CanaryStarting",
    "Running": "CanaryRunning",
    "Promoting": "CanaryPromoting",
}


@dataclass(frozen=True)
class Analysis:
    """A step's verdict as the handler obtained it: `ok` True (within thresholds) or False (a
    breach: abort), None when the metrics could not be read (the step holds)."""

    ok: bool | None
    reason: str


@dataclass(frozen=True)
class CanaryDecision:
    decision: rollout.Decision  # the stable Deployment's model and spec, the status, the events
    plan: CanaryPlan | None  # the canary's children; None: no canary Deployment
    wake_at: datetime | None = None  # reconcile again then (a step's end), not only on events


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def finish(
    history: list[HistoryEntry], ref: ModelRef, result: str, ts: str, message: str
) -> list[HistoryEntry]:
    """`history` with the latest InProgress entry of `ref` finished."""
    out = list(history)
    for i in range(len(out) - 1, -1, -1):
        if out[i].ref() == ref and out[i].result == "InProgress":
            out[i] = out[i].model_copy(
                update={"result": result, "finished": ts, "message": message}
            )
            break
    return out


def always_roll_back(spec: SpeechModelSpec) -> SpeechModelSpec:
    return spec.model_copy(
        update={"rollout": spec.rollout.model_copy(update={"auto_rollback": True})}
    )


def stable_spec(spec: SpeechModelSpec, prev: SpeechModelStatus, lkg: ModelRef) -> SpeechModelSpec:
    """The spec the stable Deployment keeps during a canary: lastKnownGood's model and pod
    sections (a spec change that came with the new version waits for the promotion)."""
    sections = dict(prev.last_known_good_spec or {})
    model = {
        k: v for k, v in (sections.get("model") or spec.dump()["model"]).items() if k != "sha256"
    }
    sections["model"] = {**model, **lkg.dump()}
    return rollout.with_pod_sections(spec, sections)


def with_status(
    decision: rollout.Decision, status: SpeechModelStatus, *events: Event
) -> rollout.Decision:
    return replace(decision, status=status.dump(), events=tuple(events))


def plain(
    spec: SpeechModelSpec,
    generation: int,
    prev: SpeechModelStatus,
    stable: Observed,
    now: datetime,
    events: list[Event],
    name: str | None,
    namespace: str | None,
) -> CanaryDecision:
    """No canary runs: the rollout's own decision. After an aborted canary of the spec's model
    the stable version stays (whatever autoRollback says), quoted as CanaryAborted."""
    desired = spec.model.ref()
    failed = next((h for h in reversed(prev.history) if h.ref() == desired), None)
    aborted = (
        prev.failed_model == desired
        and prev.failed_generation == generation
        and failed is not None
        and failed.result == "Aborted"
    )
    base = prev.model_copy(update={"canary": None})
    d = rollout.decide(
        always_roll_back(spec) if aborted else spec,
        generation,
        base,
        stable,
        now,
        name=name,
        namespace=namespace,
    )
    new = SpeechModelStatus.model_validate(d.status)
    if aborted:
        conditions = [
            c.model_copy(update={"reason": "CanaryAborted"}) if c.reason == "RolledBack" else c
            for c in new.conditions
        ]
        new = new.model_copy(update={"conditions": conditions})
    return CanaryDecision(with_status(d, new, *events, *d.events), None)


def describe(cs: CanaryStatus, stable_version: str) -> str:
    where = f"canary {cs.model.version} at step {cs.step}/{cs.steps} ({cs.weight}%)"
    pods = (
        f"{cs.canary_replicas} canary pod(s) beside {cs.stable_replicas} pod(s) of {stable_version}"
    )
    if cs.mode == "Route":
        share_text = f"HTTPRoute weight {cs.effective_weight}% to the canary; {pods}"
    else:
        share_text = (
            f"no spec.routing: replica share behind the one Service, {pods} = "
            f"{cs.effective_weight}% of the pods"
        )
    when = f"; next step at {cs.next_step_at}" if cs.next_step_at else ""
    return f"{where}: {share_text}; {cs.state.lower()} since {cs.since}{when}"


def step(
    spec: SpeechModelSpec,
    generation: int,
    prev: SpeechModelStatus,
    cs: CanaryStatus,
    stable: Observed,
    canary: Observed,
    now: datetime,
    analysis: Analysis | None,
    events: list[Event],
    name: str | None,
    namespace: str | None,
) -> CanaryDecision:
    """One move of a running canary (`cs`), then the status that describes it."""
    settings = spec.rollout.canary_settings()
    assert settings is not None and prev.last_known_good is not None
    lkg, desired, ts = prev.last_known_good, spec.model.ref(), timestamp(now)
    steps, routed = settings.steps, spec.routing is not None
    stable_count = spec.replicas if spec.autoscaling is None else stable.desired_replicas
    seen = assess(canary, desired)
    wake: datetime | None = None
    abort: str | None = None
    where = f"step {cs.step}/{cs.steps}"

    def moved(state: CanaryState, **update: object) -> CanaryStatus:
        return cs.model_copy(update={"state": state, "since": ts, **update})

    if cs.state != "Promoting" and seen.progress is Progress.FAILING:
        abort = f"its pods fail at {where}: {seen.message}"
    elif cs.state == "Starting":
        want = share(stable_count, steps[cs.step - 1].weight, routed).canary_replicas
        if seen.progress is Progress.COMPLETE and canary.desired_replicas == want:
            due = now + timedelta(seconds=steps[cs.step - 1].pause_seconds)
            cs = moved("Running", next_step_at=timestamp(due))
            wake = due
            events.append(
                Event(
                    "Normal",
                    "CanaryStep",
                    f"canary of model version {desired.version}: {where}, {cs.weight}% of the "
                    f"traffic until {cs.next_step_at}",
                )
            )
    elif cs.state == "Running" and cs.next_step_at is not None:
        due = parse_timestamp(cs.next_step_at)
        if now < due:
            wake = due
        elif analysis is None or analysis.ok is None:
            why = analysis.reason if analysis is not None else "not read yet"
            cs = cs.model_copy(update={"message": f"the analysis of {where} waits: {why}"})
            wake = now + timedelta(seconds=ANALYSIS_RETRY_SECONDS)
        elif not analysis.ok:
            abort = f"the analysis of {where} found {analysis.reason}"
        elif cs.step < cs.steps:
            nxt = steps[cs.step]
            cs = moved(
                "Starting",
                step=cs.step + 1,
                weight=nxt.weight,
                next_step_at=None,
                analysis=analysis.reason,
                message="",
            )
            events.append(
                Event(
                    "Normal",
                    "CanaryStepPassed",
                    f"canary of model version {desired.version} passed {where} "
                    f"({analysis.reason}); next: {nxt.weight}%",
                )
            )
        else:
            cs = moved("Promoting", next_step_at=None, analysis=analysis.reason, message="")
            events.append(
                Event(
                    "Normal",
                    "CanaryPromoting",
                    f"canary of model version {desired.version} passed its last step "
                    f"({analysis.reason}); promoting: the stable Deployment rolls to it",
                )
            )

    if abort is not None:
        history = finish(list(prev.history), desired, "Aborted", ts, f"canary aborted: {abort}")
        events.append(
            Event(
                "Warning",
                "CanaryAborted",
                f"canary of model version {desired.version} aborted: {abort}; all traffic back "
                f"to {lkg.version}, canary removed",
            )
        )
        aborted = prev.model_copy(
            update={
                "canary": None,
                "history": history,
                "failed_model": desired,
                "failed_version": desired.version,
                "failed_generation": generation,
            }
        )
        return plain(spec, generation, aborted, stable, now, events, name, namespace)

    # Route: the weight moves to the step's only once its canary pods are all available.
    ready_weight = (
        cs.weight if cs.state != "Starting" else (steps[cs.step - 2].weight if cs.step > 1 else 0)
    )
    split = share(stable_count, cs.weight, routed)
    effective = ready_weight if routed else split.effective_weight
    cs = cs.model_copy(
        update={
            "canary_replicas": split.canary_replicas,
            "stable_replicas": stable_count,
            "effective_weight": effective,
            "mode": "Route" if routed else "ReplicaShare",  # spec.routing may come or go
        }
    )
    plan = CanaryPlan(
        ref=desired, replicas=split.canary_replicas, weight=ready_weight, routed=routed
    )

    if cs.state == "Promoting":
        d = rollout.decide(
            always_roll_back(spec),
            generation,
            prev.model_copy(update={"canary": None}),
            stable,
            now,
            name=name,
            namespace=namespace,
        )
        new = SpeechModelStatus.model_validate(d.status)
        if new.last_known_good == desired:
            events.append(
                Event(
                    "Normal",
                    "CanaryPromoted",
                    f"model version {desired.version} promoted: the stable Deployment serves it "
                    "and takes all the traffic; canary removed",
                )
            )
            return CanaryDecision(with_status(d, new, *d.events, *events), None)
        if d.rolled_back:
            return CanaryDecision(with_status(d, new, *events, *d.events), None)
        reconciling = new.condition("Reconciling")
        detail = reconciling.message if reconciling is not None else ""
        message = f"promoting {describe(cs, lkg.version)}; {detail}"
        return running(d, new, prev, cs, message, plan, None, events, now)

    # The stable Deployment's own rollout decision, from a history whose last entry is its
    # version's success (the canary's entry, kept below, is no rollout of the stable one).
    anchor = next(
        (h for h in reversed(prev.history) if h.ref() == lkg and h.result == "Succeeded"),
        HistoryEntry(
            version=lkg.version, uri=lkg.uri, sha256=lkg.sha256, started=ts, result="Succeeded"
        ),
    )
    d = rollout.decide(
        stable_spec(spec, prev, lkg),
        generation,
        prev.model_copy(update={"canary": None, "history": [anchor]}),
        stable,
        now,
        name=name,
        namespace=namespace,
    )
    new = SpeechModelStatus.model_validate(d.status)
    new = new.model_copy(update={"history": prev.history[-MAX_HISTORY:]})
    message = describe(cs, lkg.version)
    if cs.state == "Starting" and seen.message:
        message = f"{message}; {seen.message}"
    if cs.message:
        message = f"{message}; {cs.message}"
    return running(d, new, prev, cs, message, plan, wake, events, now)


def running(
    d: rollout.Decision,
    new: SpeechModelStatus,
    prev: SpeechModelStatus,
    cs: CanaryStatus,
    message: str,
    plan: CanaryPlan,
    wake: datetime | None,
    events: list[Event],
    now: datetime,
) -> CanaryDecision:
    """The status of a canary under way: Reconciling (Argo CD: Progressing) with the step."""
    new = new.model_copy(update={"canary": cs, "target_version": cs.model.version})
    stalled = new.condition("Stalled")
    if stalled is None or stalled.status != "True":  # the stable pods' own failure comes first
        reason = CONDITION_REASONS[cs.state]
        new = set_condition(new, prev, "Reconciling", True, reason, message, now=now)
        if new.phase == "Ready":
            new = new.model_copy(update={"phase": "Progressing"})
    return CanaryDecision(with_status(d, new, *events, *d.events), plan, wake)
