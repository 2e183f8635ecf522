"""The canary step machine (`spec.rollout.strategy: Canary`): a pure function, like the rollout's.

    decide(spec, generation, status, stable, canary, now, analysis=...) -> CanaryDecision
    analysis_due(spec, status, now) -> bool   (whether the handler must read the canary's metrics)

`stable` and `canary` are `observe.observe(...)` of the Deployments `<name>` and `<name>-canary`.
All the state lives in `status.canary` (`canary_state.CanaryStatus`) and the history; nothing in
memory, so a restarted operator resumes at the step it was at, and a resync with nothing due
returns the same status and no events.

Rules (issue 19, point 3):
- A new model (uri, version, sha256) while another one serves (`lastKnownGood`) starts a canary:
  history `InProgress`, `status.canary` at step 1 `Starting`. A first deployment has nothing to
  compare with and rolls out as usual; so does a change of the pod template alone.
- Starting: the step's canary pods are created (`canary_children.share` says how many); the
  traffic stays at the previous step's weight until they are all available, then the step runs
  (`Running`, `since`, `nextStepAt` = since + pauseSeconds) and an Event says so.
- At `nextStepAt` the step is judged (`analysis`: the handler reads the canary pods' metrics and
  `canary_analysis.judge`s them): within thresholds, the next step starts, after the last one the
  canary is promoted; a breach aborts. Metrics that cannot be read hold the step and say why.
- Promoting: the stable Deployment rolls to the canary's version (its pods replaced while both
  Deployments serve, the canary at the last step's weight); once it has, `lastKnownGood` is the
  new version, all traffic returns to the stable Deployment and the canary Deployment is deleted.
  A promotion whose stable pods fail is rolled back like any rollout.
- Abort (the analysis breached a threshold, the canary's pods fail or pass their progress
  deadline): history `Aborted` with why, `failedVersion`, all traffic back to the stable version,
  the canary deleted, `Stalled=True` reason `CanaryAborted` quoting why, phase `Degraded`; that
  version is not tried again until the spec changes. A user who puts `model.version` back to the
  stable version aborts the canary too (history `Aborted`, `failedVersion`, a Warning Event), but
  the model then serves what the spec asks for, so it is Ready, not Stalled. A third version
  during a canary supersedes it: a new canary of that version starts from step 1.
- The strategy turned back to Rolling mid-canary: the canary goes away and the new version rolls
  out as usual.
- Regardless of `autoRollback`, an aborted canary never leaves traffic on the failed version.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from kubescribe_operator.api import ModelRef
from kubescribe_operator.canary_state import CanaryStatus
from kubescribe_operator.canary_step import (
    ANALYSIS_RETRY_SECONDS,
    Analysis,
    CanaryDecision,
    finish,
    parse_timestamp,
    plain,
    step,
)
from kubescribe_operator.observe import Observed
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import Event, HistoryEntry, SpeechModelStatus, timestamp

__all__ = ["ANALYSIS_RETRY_SECONDS", "Analysis", "CanaryDecision", "analysis_due", "decide"]


def analysis_due(spec: SpeechModelSpec, status: SpeechModelStatus | None, now: datetime) -> bool:
    """Whether the running step is due to be judged (the handler reads the metrics then)."""
    cs = status.canary if status is not None else None
    return (
        spec.rollout.strategy == "Canary"
        and cs is not None
        and cs.state == "Running"
        and cs.model == spec.model.ref()
        and cs.next_step_at is not None
        and now >= parse_timestamp(cs.next_step_at)
    )


def decide(
    spec: SpeechModelSpec,
    generation: int,
    status: SpeechModelStatus | None,
    stable: Observed,
    canary: Observed,
    now: datetime,
    *,
    analysis: Analysis | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> CanaryDecision:
    """The stable Deployment's model, the canary's plan, the new status and the events. Pure."""
    prev = status or SpeechModelStatus()
    settings = spec.rollout.canary_settings()
    cs, desired, ts = prev.canary, spec.model.ref(), timestamp(now)
    events: list[Event] = []
    if settings is None:
        if cs is not None:
            events.append(
                Event(
                    "Normal",
                    "CanaryCancelled",
                    f"canary of model version {cs.model.version} removed: rollout.strategy is "
                    "Rolling now",
                )
            )
        return plain(spec, generation, prev, stable, now, events, name, namespace)

    history = list(prev.history)
    reverted: ModelRef | None = None
    if cs is not None and cs.model != desired:
        if desired == prev.last_known_good:
            reverted = cs.model
            why = f"model.version was put back to {desired.version} during the canary"
            history = finish(history, cs.model, "Aborted", ts, why)
            events.append(
                Event(
                    "Warning",
                    "CanaryAborted",
                    f"canary of model version {cs.model.version} aborted at step "
                    f"{cs.step}/{cs.steps}: {why}; all traffic back to {desired.version}",
                )
            )
        else:
            history = finish(
                history,
                cs.model,
                "Superseded",
                ts,
                f"superseded by model version {desired.version}",
            )
        prev = prev.model_copy(update={"canary": None, "history": history})
        cs = None

    lkg = prev.last_known_good
    if cs is None:
        failed_here = prev.failed_model == desired and prev.failed_generation == generation
        if lkg is None or lkg == desired or failed_here:
            out = plain(spec, generation, prev, stable, now, events, name, namespace)
            if reverted is None:
                return out
            # The spec now asks for the stable version: Ready, with the canary's failure kept.
            new = SpeechModelStatus.model_validate(out.decision.status).model_copy(
                update={
                    "failed_version": reverted.version,
                    "failed_model": reverted,
                    "failed_generation": generation,
                }
            )
            return replace(out, decision=replace(out.decision, status=new.dump()))
        last = history[-1] if history else None
        if last is not None and last.result == "InProgress" and last.ref() != desired:
            history = finish(history, last.ref(), "Superseded", ts, "superseded by a canary")
        if last is None or last.ref() != desired or last.result != "InProgress":
            history.append(
                HistoryEntry(
                    version=desired.version,
                    uri=desired.uri,
                    sha256=desired.sha256,
                    started=ts,
                    result="InProgress",
                )
            )
        prev = prev.model_copy(
            update={
                "history": history,
                "failed_model": None,
                "failed_version": None,
                "failed_generation": None,
            }
        )
        cs = CanaryStatus(
            model=desired,
            stable_version=lkg.version,
            state="Starting",
            mode="Route" if spec.routing is not None else "ReplicaShare",
            step=1,
            steps=len(settings.steps),
            weight=settings.steps[0].weight,
            effective_weight=0,
            canary_replicas=0,
            stable_replicas=0,
            started=ts,
            since=ts,
        )
        events.append(
            Event(
                "Normal",
                "CanaryStarted",
                f"canary of model version {desired.version} started beside {lkg.version}: "
                f"{len(settings.steps)} step(s) of "
                + ", ".join(f"{s.weight}%" for s in settings.steps)
                + (" (HTTPRoute weights)" if spec.routing else " (replica share: no spec.routing)"),
            )
        )
    return step(spec, generation, prev, cs, stable, canary, now, analysis, events, name, namespace)
