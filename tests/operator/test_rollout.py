"""The rollout decision, table-driven: (spec, generation, status, observed, now) -> decision.

Each case starts from a status reached by a short story of earlier decisions (created,
rolled out, rolled back, ...), takes one more step and checks the model deployed, the status
and the events. Every case is also checked for idempotence (feeding the new status back in,
later, changes nothing and emits nothing) and against the CRD's status schema.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
from kubescribe_operator import builders, crd
from kubescribe_operator.api import ModelRef
from kubescribe_operator.observe import Observed, PodProblem, observe
from kubescribe_operator.rollout import Decision, decide, status_patch
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import MAX_HISTORY, SpeechModelStatus

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
V1 = ModelRef(uri="s3://bucket/stt/1", version="1.0.0")
V2 = ModelRef(uri="s3://bucket/stt/2", version="2.0.0", sha256="a" * 64)
V3 = ModelRef(uri="s3://bucket/stt/3", version="3.0.0")


def make_spec(ref: ModelRef, *, auto_rollback: bool = True, replicas: int = 2) -> SpeechModelSpec:
    model: dict[str, Any] = {"uri": ref.uri, "version": ref.version}
    if ref.sha256:
        model["sha256"] = ref.sha256
    return SpeechModelSpec.model_validate(
        {"model": model, "replicas": replicas, "rollout": {"autoRollback": auto_rollback}}
    )


def deployed(
    ref: ModelRef,
    *,
    desired: int = 2,
    updated: int | None = None,
    available: int | None = None,
    old: int = 0,
    old_ready: int = 0,
    caught_up: bool = True,
    deadline: bool = False,
    failing: str | None = None,
    old_ref: ModelRef | None = None,
    template_rolling: bool = False,
) -> Observed:
    """A Deployment whose template runs `ref`; `old` pods of `old_ref` still around."""
    updated = desired if updated is None else updated
    available = updated if available is None else available
    ready_by_ref = {ref.digest(): available}
    if old_ref is not None:
        ready_by_ref[old_ref.digest()] = old_ready
    problems = {}
    if failing is not None:
        problems[ref.digest()] = (
            PodProblem(
                pod="demo-abc",
                container="fetch",
                reason=failing,
                message=f"pod demo-abc: {failing}",
            ),
        )
    return Observed(
        deployment_exists=True,
        template_ref=ref.digest(),
        template_observed=caught_up,
        desired_replicas=desired,
        replicas=updated + old,
        updated_replicas=updated,
        ready_replicas=available + old_ready,
        available_replicas=available + old_ready,
        deadline_exceeded=deadline,
        deadline_message='ReplicaSet "demo-2" has timed out progressing.' if deadline else "",
        template_rolling=template_rolling,
        ready_by_ref=ready_by_ref,
        problems_by_ref=problems,
    )


def complete(ref: ModelRef, desired: int = 2) -> Observed:
    return deployed(ref, desired=desired)


def pending_over(current: ModelRef) -> Observed:
    """The Deployment still runs `current` everywhere (the new template not applied yet)."""
    return complete(current)


@dataclass
class Story:
    """Earlier steps: each decision's status is fed into the next, a minute apart."""

    status: SpeechModelStatus | None = None
    generation: int = 1
    minute: int = 0
    decisions: list[Decision] = field(default_factory=list)

    def step(
        self, spec: SpeechModelSpec, observed: Observed, generation: int | None = None
    ) -> Decision:
        if generation is not None:
            self.generation = generation
        decision = decide(
            spec,
            self.generation,
            self.status,
            observed,
            T0 + timedelta(minutes=self.minute),
            name="demo",
            namespace="speech",
        )
        self.status = SpeechModelStatus.model_validate(decision.status)
        self.minute += 1
        self.decisions.append(decision)
        return decision


# ------------------------------------------------------------------------- prior states


def fresh() -> Story:
    return Story()


def steady_v1(auto_rollback: bool = True) -> Story:
    story = Story()
    story.step(make_spec(V1, auto_rollback=auto_rollback), complete(V1))
    return story


def rolling_v2(auto_rollback: bool = True) -> Story:
    story = steady_v1(auto_rollback)
    story.step(make_spec(V2, auto_rollback=auto_rollback), pending_over(V1), generation=2)
    return story


def rolled_back_v2() -> Story:
    story = rolling_v2()
    story.step(
        make_spec(V2),
        deployed(
            V2,
            updated=1,
            available=0,
            old=2,
            old_ready=2,
            old_ref=V1,
            failing="InitContainerFailed",
        ),
    )
    return story


def rolled_back_v2_done() -> Story:
    story = rolled_back_v2()
    story.step(make_spec(V2), complete(V1))
    return story


def failed_v2_without_rollback() -> Story:
    story = rolling_v2(auto_rollback=False)
    story.step(
        make_spec(V2, auto_rollback=False),
        deployed(
            V2, updated=1, available=0, old=2, old_ready=2, old_ref=V1, failing="CrashLoopBackOff"
        ),
    )
    return story


# ------------------------------------------------------------------- the scenario table


@dataclass(frozen=True)
class Case:
    """One more step after a prior story, and what the decision must say."""

    id: str
    prior: Callable[[], Story]
    spec: SpeechModelSpec
    observed: Observed
    generation: int | None = None  # None: the prior story's generation
    deploy: ModelRef = V1
    phase: str = "Ready"
    ready: tuple[str, str] = ("True", "Ready")
    reconciling: tuple[str, str] = ("False", "Current")
    stalled: tuple[str, str] = ("False", "Current")
    current: str | None = "1.0.0"
    target: str = "1.0.0"
    last_known_good: ModelRef | None = V1
    failed: str | None = None
    history: tuple[str, ...] = ("1.0.0:Succeeded",)
    events: tuple[str, ...] = ()
    message_has: tuple[str, ...] = ()


def case(
    id: str,
    prior: Callable[[], Story],
    spec: SpeechModelSpec,
    observed: Observed,
    *outcomes: dict[str, Any],
    **overrides: Any,
) -> Case:
    """A case whose expectations are the defaults (serving 1.0.0), then each outcome preset,
    then the overrides."""
    expected: dict[str, Any] = {}
    for outcome in outcomes:
        expected.update(outcome)
    return Case(id, prior, spec, observed, **{**expected, **overrides})


IN_FLIGHT = ("True", "RolloutInProgress")
NOT_STALLED = ("False", "RolloutInProgress")

# Outcome presets: what most cases of one kind expect.
FIRST_ROLLOUT: dict[str, Any] = dict(
    phase="Progressing",
    ready=("False", "RolloutInProgress"),
    reconciling=IN_FLIGHT,
    stalled=NOT_STALLED,
    current=None,
    last_known_good=None,
    history=("1.0.0:InProgress",),
    events=("RolloutStarted",),
)
FIRST_FAILED: dict[str, Any] = dict(
    phase="Failed",
    ready=("False", "RolloutFailed"),
    reconciling=("False", "RolloutFailed"),
    stalled=("True", "RolloutFailed"),
    current=None,
    last_known_good=None,
    failed="1.0.0",
    history=("1.0.0:Failed",),
    events=("RolloutStarted", "RolloutFailed"),
)
UPDATING: dict[str, Any] = dict(
    generation=2,
    phase="Progressing",
    reconciling=("True", "Updating"),
    stalled=("False", "Updating"),
)
ROLLING_V2: dict[str, Any] = dict(
    deploy=V2,
    phase="Progressing",
    reconciling=IN_FLIGHT,
    stalled=NOT_STALLED,
    target="2.0.0",
    history=("1.0.0:Succeeded", "2.0.0:InProgress"),
)
ROLLOUT_STARTS: dict[str, Any] = dict(
    generation=2,
    phase="Progressing",
    reconciling=IN_FLIGHT,
    stalled=NOT_STALLED,
    history=("1.0.0:Succeeded", "1.0.0:InProgress"),
    events=("RolloutStarted",),
)
ROLLED_BACK_V2: dict[str, Any] = dict(
    deploy=V1,
    phase="Degraded",
    ready=("False", "RolledBack"),
    reconciling=("True", "RollingBack"),
    stalled=("True", "RolledBack"),
    target="2.0.0",
    failed="2.0.0",
    history=("1.0.0:Succeeded", "2.0.0:RolledBack"),
)
SETTLED: dict[str, Any] = dict(reconciling=("False", "RolledBack"))
ROLLING_BACK_NOW: dict[str, Any] = dict(events=("RolloutFailed", "RolledBack"))
FAILED_V2: dict[str, Any] = dict(
    deploy=V2,
    phase="Degraded",
    ready=("False", "RolloutFailed"),
    reconciling=("False", "RolloutFailed"),
    stalled=("True", "RolloutFailed"),
    target="2.0.0",
    failed="2.0.0",
    history=("1.0.0:Succeeded", "2.0.0:Failed"),
)
SERVING_V2: dict[str, Any] = dict(
    deploy=V2, current="2.0.0", target="2.0.0", last_known_good=V2, events=("RolloutSucceeded",)
)


def half_rolled(ref: ModelRef = V2, **problem: Any) -> Observed:
    """One pod of `ref` not available, the two old V1 pods still serving."""
    return deployed(ref, updated=1, available=0, old=2, old_ready=2, old_ref=V1, **problem)


OLD_PODS_CRASHING = Observed(
    deployment_exists=True,
    template_ref=V2.digest(),
    template_observed=True,
    desired_replicas=2,
    replicas=3,
    updated_replicas=1,
    ready_replicas=1,
    available_replicas=1,
    problems_by_ref={
        V1.digest(): (
            PodProblem(pod="old", container="runtime", reason="CrashLoopBackOff", message="old"),
        )
    },
)
V1_SHA = V1.model_copy(update={"sha256": "b" * 64})
V1_URI = V1.model_copy(update={"uri": "https://models.example.com/v1"})

CASES = [
    # --- first deployment
    case("create-no-deployment-yet", fresh, make_spec(V1), Observed(), FIRST_ROLLOUT,
         phase="Pending"),
    case("create-pods-starting", fresh, make_spec(V1), deployed(V1, updated=2, available=1),
         FIRST_ROLLOUT, message_has=("2/2 replica(s) updated, 1 available",)),
    # Every pod created, none ready yet (fetching, loading the model): progress, not a loss
    # of capacity.
    case("create-pods-created-none-ready", fresh, make_spec(V1),
         deployed(V1, updated=2, available=0, template_rolling=True), FIRST_ROLLOUT,
         message_has=("2/2 replica(s) updated, 0 available",)),
    case("create-complete-at-once", fresh, make_spec(V1), complete(V1),
         events=("RolloutStarted", "RolloutSucceeded")),
    case("create-fails-with-autorollback-has-nothing-to-go-back-to", fresh, make_spec(V1),
         deployed(V1, available=0, failing="InitContainerFailed"), FIRST_FAILED,
         message_has=("model version 1.0.0 failed", "InitContainerFailed")),
    case("create-fails-without-autorollback", fresh, make_spec(V1, auto_rollback=False),
         deployed(V1, available=0, deadline=True), FIRST_FAILED,
         message_has=("timed out progressing",)),
    # Pods refused at admission (the ReplicaSet's ReplicaFailure): failed at once.
    case("create-pods-refused-at-admission", fresh, make_spec(V1),
         deployed(V1, available=0, failing="FailedCreate"), FIRST_FAILED,
         message_has=("FailedCreate",)),
    # --- steady state
    case("resync-steady", steady_v1, make_spec(V1), complete(V1)),
    case("replicas-change-is-no-rollout", steady_v1, make_spec(V1, replicas=4),
         deployed(V1, desired=4, updated=4, available=4), generation=2),
    case("hpa-scale-up-stays-ready", steady_v1, make_spec(V1),
         deployed(V1, desired=4, updated=4, available=2), message_has=("2/4",)),
    case("scaled-to-zero-is-ready", steady_v1, make_spec(V1, replicas=0), deployed(V1, desired=0),
         generation=2),
    case("template-change-without-new-model", steady_v1, make_spec(V1),
         deployed(V1, updated=1, old=1, old_ready=1, old_ref=V1), UPDATING),
    # A change that is no new model replaced every pod at once (maxUnavailable allows it):
    # the Deployment still rolls within its deadline.
    case("template-change-pods-replaced-none-ready-yet", steady_v1, make_spec(V1),
         deployed(V1, updated=2, available=0, template_rolling=True), UPDATING,
         ready=("False", "Updating"),
         message_has=("updating: 2/2 replica(s) updated, 0 available",)),
    # The rollout had completed (the Deployment says NewReplicaSetAvailable); the pods are
    # gone since: a serving model that lost its capacity.
    case("serving-model-loses-every-pod-is-degraded", steady_v1, make_spec(V1),
         deployed(V1, updated=2, available=0), phase="Degraded",
         ready=("False", "NoReplicaAvailable")),
    case("serving-pods-start-crashing-later", steady_v1, make_spec(V1),
         deployed(V1, available=1, failing="CrashLoopBackOff"), phase="Degraded",
         ready=("True", "CrashLoopBackOff"), reconciling=("False", "CrashLoopBackOff"),
         stalled=("True", "CrashLoopBackOff")),
    case("scale-up-refused-at-admission", steady_v1, make_spec(V1, replicas=3),
         deployed(V1, desired=3, updated=2, available=2, failing="FailedCreate"), generation=2,
         phase="Degraded", ready=("True", "FailedCreate"), reconciling=("False", "FailedCreate"),
         stalled=("True", "FailedCreate")),
    # --- a new version
    case("version-change-starts-a-rollout", steady_v1, make_spec(V2), pending_over(V1),
         ROLLING_V2, generation=2, events=("RolloutStarted",),
         message_has=("replacing 1.0.0", "model version 1.0.0 is serving")),
    case("sha256-change-alone-starts-a-rollout", steady_v1, make_spec(V1_SHA), pending_over(V1),
         ROLLOUT_STARTS, deploy=V1_SHA),
    case("uri-change-alone-starts-a-rollout", steady_v1, make_spec(V1_URI), pending_over(V1),
         ROLLOUT_STARTS, deploy=V1_URI),
    case("rollout-in-progress", rolling_v2, make_spec(V2),
         deployed(V2, updated=1, available=1, old=1, old_ready=1, old_ref=V1), ROLLING_V2,
         message_has=("1/2 replica(s) updated",
                      "1 replica(s) of 1.0.0 ready, 1 replica(s) of 2.0.0 ready")),
    case("rollout-succeeds", rolling_v2, make_spec(V2), complete(V2), SERVING_V2,
         history=("1.0.0:Succeeded", "2.0.0:Succeeded")),
    case("not-complete-while-old-pods-remain", rolling_v2, make_spec(V2),
         deployed(V2, updated=2, available=2, old=1, old_ready=1, old_ref=V1), ROLLING_V2),
    case("stale-deployment-status-is-not-a-failure", rolling_v2, make_spec(V2),
         deployed(V2, available=0, caught_up=False, deadline=True), ROLLING_V2,
         ready=("False", "RolloutInProgress"), message_has=("updating the Deployment",)),
    case("old-pods-crashing-do-not-fail-the-new-version", rolling_v2, make_spec(V2),
         OLD_PODS_CRASHING, ROLLING_V2),
    case("a-newer-version-supersedes-the-rollout", rolling_v2, make_spec(V3),
         half_rolled(), ROLLING_V2, generation=3, deploy=V3, target="3.0.0",
         history=("1.0.0:Succeeded", "2.0.0:Superseded", "3.0.0:InProgress"),
         events=("RolloutStarted",)),
    # --- failure and rollback
    case("init-container-failure-rolls-back", rolling_v2, make_spec(V2),
         half_rolled(failing="InitContainerFailed"), ROLLED_BACK_V2, ROLLING_BACK_NOW,
         message_has=("model version 2.0.0 failed", "InitContainerFailed",
                      "rolled back to model version 1.0.0")),
    case("crash-loop-rolls-back", rolling_v2, make_spec(V2),
         half_rolled(failing="CrashLoopBackOff"), ROLLED_BACK_V2, ROLLING_BACK_NOW,
         message_has=("CrashLoopBackOff",)),
    case("pods-refused-at-admission-roll-back-at-once", rolling_v2, make_spec(V2),
         half_rolled(failing="FailedCreate"), ROLLED_BACK_V2, ROLLING_BACK_NOW,
         message_has=("FailedCreate",)),
    case("progress-deadline-rolls-back", rolling_v2, make_spec(V2), half_rolled(deadline=True),
         ROLLED_BACK_V2, ROLLING_BACK_NOW, message_has=("timed out progressing",)),
    case("rolled-back-and-settled", rolled_back_v2, make_spec(V2), complete(V1), ROLLED_BACK_V2,
         SETTLED, message_has=("model version 2.0.0 failed",)),
    case("failed-version-is-not-retried-on-resync", rolled_back_v2_done, make_spec(V2),
         complete(V1), ROLLED_BACK_V2, SETTLED),
    case("rolled-back-with-no-pod-ready-is-failed", rolled_back_v2, make_spec(V2),
         deployed(V1, available=0), ROLLED_BACK_V2, phase="Failed"),
    case("a-spec-change-retries-the-failed-version", rolled_back_v2_done,
         make_spec(V2, replicas=3), complete(V1), ROLLING_V2, generation=3,
         history=("1.0.0:Succeeded", "2.0.0:RolledBack", "2.0.0:InProgress"),
         events=("RolloutStarted",)),
    case("reverting-the-spec-to-the-good-version-heals", rolled_back_v2_done, make_spec(V1),
         complete(V1), generation=3,
         history=("1.0.0:Succeeded", "2.0.0:RolledBack", "1.0.0:Succeeded"),
         events=("RolloutStarted", "RolloutSucceeded")),
    case("failure-without-autorollback-keeps-the-new-version", rolling_v2,
         make_spec(V2, auto_rollback=False), half_rolled(failing="InitContainerFailed"),
         FAILED_V2, events=("RolloutFailed",)),
    case("failed-without-autorollback-stays-stalled", failed_v2_without_rollback,
         make_spec(V2, auto_rollback=False), half_rolled(), FAILED_V2,
         message_has=("CrashLoopBackOff",)),
    case("failed-without-autorollback-then-recovers", failed_v2_without_rollback,
         make_spec(V2, auto_rollback=False), complete(V2), SERVING_V2,
         history=("1.0.0:Succeeded", "2.0.0:Failed", "2.0.0:Succeeded")),
]  # fmt: skip


STATUS_SCHEMA = jsonschema.Draft202012Validator(
    crd.strict_json_schema(crd.crd_schema()["properties"]["status"])
)


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_scenario(case: Case) -> None:
    """The decision after the prior story; then a resync hours later with the same
    observations changes nothing and says nothing (idempotence)."""
    story = case.prior()
    generation = case.generation or story.generation
    decision = story.step(case.spec, case.observed, generation)
    status = decision.status

    assert decision.model_ref == case.deploy
    assert decision.rolled_back is (case.deploy != case.spec.model.ref())
    assert status["phase"] == case.phase
    conditions = _conditions(status)
    assert set(conditions) == {"Ready", "Reconciling", "Stalled"}
    for type_, expected in (
        ("Ready", case.ready),
        ("Reconciling", case.reconciling),
        ("Stalled", case.stalled),
    ):
        assert (conditions[type_]["status"], conditions[type_]["reason"]) == expected, type_
        assert conditions[type_]["observedGeneration"] == generation
    assert status["observedGeneration"] == generation
    assert status.get("currentVersion") == case.current
    assert status["targetVersion"] == case.target
    lkg = status.get("lastKnownGood")
    assert (ModelRef.model_validate(lkg) if lkg else None) == case.last_known_good
    assert status.get("failedVersion") == case.failed
    assert tuple(f"{h['version']}:{h['result']}" for h in status["history"]) == case.history
    assert tuple(e.reason for e in decision.events) == case.events
    text = " ".join(c["message"] for c in status["conditions"]) + " ".join(
        e.message for e in decision.events
    )
    for fragment in case.message_has:
        assert fragment in text
    assert status["selector"] == builders.selector_string("demo")
    assert status["endpoint"] == "http://demo.speech.svc:80"
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (
        case.observed.replicas,
        case.observed.ready_replicas,
        case.observed.updated_replicas,
    )
    # kubectl get's READY column: ready/desired, as a Deployment's (issue 22.12).
    assert status["ready"] == f"{case.observed.ready_replicas}/{case.observed.desired_replicas}"
    STATUS_SCHEMA.validate(status)

    again = decide(
        case.spec,
        story.generation,
        story.status,
        case.observed,
        T0 + timedelta(hours=5),
        name="demo",
        namespace="speech",
    )
    assert (again.status, again.model_ref, again.events) == (status, decision.model_ref, ())
    assert status_patch(status, again.status) == {}


def test_failure_events_name_the_versions() -> None:
    decision = rolled_back_v2().decisions[-1]
    failed, rolled_back = decision.events
    assert failed.type == "Warning" and "2.0.0" in failed.message
    assert (
        rolled_back.type == "Warning"
        and "1.0.0" in rolled_back.message
        and "2.0.0" in rolled_back.message
    )


def test_last_transition_time_changes_only_with_the_status() -> None:
    story = steady_v1()
    assert story.status is not None
    ready_since = story.status.condition("Ready").last_transition_time  # type: ignore[union-attr]
    story.step(make_spec(V1, replicas=3), deployed(V1, desired=3), generation=2)
    assert story.status.condition("Ready").last_transition_time == ready_since  # type: ignore[union-attr]
    story.step(make_spec(V2), pending_over(V1), generation=3)
    reconciling = story.status.condition("Reconciling")  # type: ignore[union-attr]
    assert reconciling is not None and reconciling.status == "True"
    assert reconciling.last_transition_time == "2026-01-01T12:02:00Z"


def test_history_is_bounded_and_keeps_the_latest() -> None:
    story = Story()
    for n in range(MAX_HISTORY + 5):
        ref = ModelRef(uri=f"s3://bucket/{n}", version=f"{n}.0")
        story.step(make_spec(ref), complete(ref), generation=n + 1)
    assert story.status is not None
    assert len(story.status.history) == MAX_HISTORY
    assert story.status.history[-1].version == f"{MAX_HISTORY + 4}.0"
    assert all(h.result == "Succeeded" and h.finished for h in story.status.history)


def test_history_records_start_and_finish_times() -> None:
    story = rolling_v2()
    story.step(make_spec(V2), deployed(V2, updated=1, old=1, old_ref=V1))
    story.step(make_spec(V2), complete(V2))
    assert story.status is not None
    entry = story.status.history[-1]
    assert (entry.started, entry.finished, entry.result) == (
        "2026-01-01T12:01:00Z",
        "2026-01-01T12:03:00Z",
        "Succeeded",
    )


def test_status_round_trips_and_ignores_foreign_keys() -> None:
    decision = steady_v1().decisions[-1]
    with_kopf = {**decision.status, "kopf": {"progress": {}}}
    assert SpeechModelStatus.model_validate(with_kopf).dump() == decision.status


# -------------------------------------------------------------------------- status_patch


def test_status_patch() -> None:
    old = {"phase": "Ready", "failedVersion": "2", "kopf": {"x": 1}, "replicas": 2}
    new = {"phase": "Ready", "replicas": 3}
    assert status_patch(old, new) == {"failedVersion": None, "replicas": 3}
    assert status_patch(new, new) == {}
    assert status_patch(None, new) == new


# ------------------------------------------------------------------------------- observe


def _annotated(ref: ModelRef) -> dict[str, Any]:
    return {"annotations": {builders.ANNOTATION_MODEL_REF: ref.digest()}}


def _deployment(ref: ModelRef, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo", "generation": 4},
        "spec": {"replicas": 3, "template": {"metadata": _annotated(ref)}},
        "status": status,
    }


def _replicaset(ref: ModelRef, name: str = "demo-2", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"template": {"metadata": _annotated(ref)}},
        "status": status,
    }


def _pod(ref: ModelRef, name: str = "demo-1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, **_annotated(ref)}, "status": status}


def waiting(reason: str, message: str | None = None) -> dict[str, Any]:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def terminated(code: int, **detail: Any) -> dict[str, Any]:
    return {"terminated": {"exitCode": code, **detail}}


RUNNING: dict[str, Any] = {"running": {}}


def containers(
    kind: str, state: dict[str, Any], last: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A pod status with one container: kind "init" (fetch) or "runtime"."""
    name, key = (
        ("fetch", "initContainerStatuses") if kind == "init" else ("runtime", "containerStatuses")
    )
    status = {"name": name, "state": state, **({"lastState": last} if last else {}), **extra}
    return {key: [status]}


UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        }
    ],
}
REFUSED = {
    "type": "ReplicaFailure",
    "status": "True",
    "reason": "FailedCreate",
    "message": 'pods "demo-2-x" is forbidden: no PriorityClass with name gold was found',
}

# (id, the pod's status, (problem reason, a fragment of its message) or None: no problem)
POD_CASES: list[tuple[str, dict[str, Any], tuple[str, str] | None]] = [
    ("fetch-failed", containers("init", terminated(1, message="sha256 mismatch for x")),
     ("InitContainerFailed", "sha256 mismatch")),
    ("fetch-crash-looping", containers("init", waiting("CrashLoopBackOff"),
                                       terminated(2, reason="Error"), restartCount=2),
     ("InitContainerFailed", "exit code 2")),
    ("fetch-image-missing", containers("init", waiting("ImagePullBackOff", "not found")),
     ("ImagePullFailed", "not found")),
    ("runtime-crash-looping", containers("runtime", waiting("CrashLoopBackOff", "back-off 10s"),
                                         restartCount=1),
     ("CrashLoopBackOff", "back-off")),
    ("runtime-exited-again-at-the-threshold",
     containers("runtime", terminated(137, reason="OOMKilled"), restartCount=3),
     ("CrashLoopBackOff", "OOMKilled")),
    ("runtime-secret-missing",
     containers("runtime", waiting("CreateContainerConfigError", 'secret "s3" not found')),
     ("ContainerConfigError", "secret")),
    # Healthy, or on its way (only a current failure counts: defect 2.1).
    ("no-status-yet", {}, None),
    ("unschedulable", UNSCHEDULABLE, None),
    ("fetch-done", containers("init", terminated(0)), None),
    ("fetch-running", containers("init", RUNNING), None),
    ("fetch-succeeded-on-a-retry",
     containers("init", terminated(0), terminated(1, message="timeout"), restartCount=1), None),
    ("runtime-creating", containers("runtime", waiting("ContainerCreating")), None),
    ("runtime-restarted-once", containers("runtime", RUNNING, terminated(1), restartCount=1),
     None),
    ("runtime-recovered-after-an-oom-kill-at-the-threshold",
     containers("runtime", RUNNING, terminated(137, reason="OOMKilled"), restartCount=3,
                ready=True), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pod_status", "expected"), [pytest.param(s, e, id=i) for i, s, e in POD_CASES]
)
def test_observe_pod(pod_status: dict[str, Any], expected: tuple[str, str] | None) -> None:
    seen = observe(_deployment(V2, observedGeneration=4), [], [_pod(V2, **pod_status)])
    if expected is None:
        assert seen.problems_by_ref == {}
        return
    (problem,) = seen.problems_by_ref[V2.digest()]
    assert (problem.reason, problem.pod) == (expected[0], "demo-1")
    assert expected[1] in problem.message


def test_observe_nothing() -> None:
    assert observe(None, [], []) == Observed()


def test_observe_deployment_counts_and_ready_replicas_by_model() -> None:
    seen = observe(
        _deployment(V2, observedGeneration=4, replicas=4, updatedReplicas=2, readyReplicas=3,
                    availableReplicas=3),
        [_replicaset(V1, "demo-1", readyReplicas=2), _replicaset(V2, readyReplicas=1)],
        [],
    )  # fmt: skip
    assert seen.deployment_exists and seen.template_observed
    assert seen.template_ref == V2.digest()
    counts = (seen.desired_replicas, seen.replicas, seen.updated_replicas, seen.ready_replicas)
    assert (*counts, seen.available_replicas) == (3, 4, 2, 3, 3)
    assert seen.ready_by_ref == {V1.digest(): 2, V2.digest(): 1}
    assert not seen.deadline_exceeded


def test_observe_a_replicaset_whose_pods_are_refused_at_admission() -> None:
    """Defect 2.2: the ReplicaSet's ReplicaFailure is a problem of its model at once."""
    seen = observe(
        _deployment(V2, observedGeneration=4),
        [_replicaset(V2, conditions=[REFUSED]), _replicaset(V1, "demo-1")],
        [],
    )
    (problem,) = seen.problems_by_ref[V2.digest()]
    assert problem.reason == "FailedCreate" and "no PriorityClass with name gold" in problem.message
    assert V1.digest() not in seen.problems_by_ref


def test_observe_lagging_controller_and_deadline() -> None:
    deadline = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "timed out",
    }
    seen = observe(_deployment(V2, observedGeneration=3, conditions=[deadline]), [], [])
    assert not seen.template_observed
    assert seen.deadline_exceeded and seen.deadline_message == "timed out"
    progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    done = observe(_deployment(V2, observedGeneration=4, conditions=[progressing]), [], [])
    assert not done.deadline_exceeded and not done.template_rolling
    assert not seen.template_rolling  # past its deadline: failing, no longer rolling


@pytest.mark.parametrize("reason", ["ReplicaSetUpdated", "NewReplicaSetCreated"])
def test_observe_a_template_rollout_within_its_deadline(reason: str) -> None:
    progressing = {"type": "Progressing", "status": "True", "reason": reason}
    seen = observe(_deployment(V2, observedGeneration=4, conditions=[progressing]), [], [])
    assert seen.template_rolling and not seen.deadline_exceeded


def test_observe_groups_problems_by_model_and_skips_terminating_pods() -> None:
    crash = containers("runtime", waiting("CrashLoopBackOff"))
    terminating = _pod(V2, "demo-3", **crash)
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    seen = observe(
        _deployment(V2, observedGeneration=4),
        [],
        [_pod(V1, "demo-1", **crash), _pod(V2, "demo-2", **crash), terminating],
    )
    assert {ref: [p.pod for p in problems] for ref, problems in seen.problems_by_ref.items()} == {
        V1.digest(): ["demo-1"],
        V2.digest(): ["demo-2"],
    }


@pytest.mark.parametrize(
    ("replicasets", "pods", "fragment"),
    [
        ([], [_pod(V2, **containers("init", terminated(1, message="digest mismatch")))],
         "digest mismatch"),
        ([_replicaset(V2, conditions=[REFUSED])], [], "no PriorityClass with name gold"),
    ],
)  # fmt: skip
def test_observe_then_decide_end_to_end(
    replicasets: list[dict[str, Any]], pods: list[dict[str, Any]], fragment: str
) -> None:
    """Raw objects through observe() into decide(): a failing new version rolls back at once."""
    story = rolling_v2()
    raw = observe(
        _deployment(V2, observedGeneration=4, replicas=3, updatedReplicas=1, readyReplicas=2,
                    availableReplicas=2),
        replicasets,
        pods,
    )  # fmt: skip
    decision = story.step(make_spec(V2), raw)
    assert decision.model_ref == V1
    assert fragment in _conditions(decision.status)["Stalled"]["message"]


def test_observe_notes_unschedulable_pods_without_failing_them() -> None:
    seen = observe(_deployment(V2, observedGeneration=4), [], [_pod(V2, "demo-9", **UNSCHEDULABLE)])
    assert seen.problems_by_ref == {}
    (note,) = seen.notes_by_ref[V2.digest()]
    assert "demo-9" in note and "Insufficient nvidia.com/gpu" in note


def test_unschedulable_pods_are_named_in_the_rollout_message_and_the_deadline_failure() -> None:
    note = ("pod demo-9 is not scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",)
    story = rolling_v2()
    waiting_pods = half_rolled().model_copy(update={"notes_by_ref": {V2.digest(): note}})
    decision = story.step(make_spec(V2), waiting_pods)
    reconciling = _conditions(decision.status)["Reconciling"]
    assert (
        reconciling["status"] == "True" and "Insufficient nvidia.com/gpu" in reconciling["message"]
    )
    assert decision.model_ref == V2  # waiting for a GPU is not a failure (yet)

    expired = waiting_pods.model_copy(
        update={"deadline_exceeded": True, "deadline_message": "timed out"}
    )
    decision = story.step(make_spec(V2), expired)
    assert decision.model_ref == V1
    stalled = _conditions(decision.status)["Stalled"]
    assert stalled["reason"] == "RolledBack"
    assert "timed out" in stalled["message"] and "Insufficient nvidia.com/gpu" in stalled["message"]


# ------------------------------------------------------------------------ random walks


def _random_observation(rng: random.Random, running: ModelRef, other: ModelRef | None) -> Observed:
    """What a Deployment controller might show while running `running` (`other` still around)."""
    desired = rng.choice([0, 1, 2, 3])
    updated = rng.randint(0, desired)
    kind = rng.random()
    if kind < 0.1:
        return Observed()
    if kind < 0.2:
        return complete(other or running, desired)  # the template not applied yet
    if kind < 0.45:
        return complete(running, desired)
    return deployed(
        running,
        desired=desired,
        updated=updated,
        available=rng.randint(0, updated),
        old=rng.randint(0, 2) if other else 0,
        old_ready=rng.randint(0, 1) if other else 0,
        old_ref=other,
        caught_up=rng.random() < 0.8,
        deadline=rng.random() < 0.1,
        failing=rng.choice([None, None, None, "CrashLoopBackOff", "InitContainerFailed"]),
    )


def _check_invariants(
    decision: Decision, spec: SpeechModelSpec, prior_lkg: ModelRef | None
) -> None:
    status = SpeechModelStatus.model_validate(decision.status)
    STATUS_SCHEMA.validate(decision.status)
    conditions = {c.type: c for c in status.conditions}
    assert decision.model_ref in (spec.model.ref(), prior_lkg)
    if decision.rolled_back:
        assert decision.model_ref == status.last_known_good == prior_lkg
        assert status.failed_version == spec.model.version
        # Rolled back, or the rollback fails too (the last good template fails now).
        assert conditions["Stalled"].status == "True"
        assert conditions["Stalled"].reason in ("RolledBack", "RollbackFailed")
    if status.phase == "Ready":
        assert [conditions[t].status for t in ("Ready", "Reconciling", "Stalled")] == [
            "True",
            "False",
            "False",
        ]
    if conditions["Stalled"].status == "True":
        assert status.phase in ("Degraded", "Failed")
    if status.failed_version is not None:
        assert conditions["Stalled"].status == "True"
    in_progress = [i for i, h in enumerate(status.history) if h.result == "InProgress"]
    assert in_progress in ([], [len(status.history) - 1])
    assert len(status.history) <= MAX_HISTORY
    if "RolloutSucceeded" in [e.reason for e in decision.events]:
        assert status.last_known_good == spec.model.ref()


def test_random_walks_keep_the_invariants_and_stay_idempotent() -> None:
    """Seeded random sequences of spec changes and controller observations."""
    rng = random.Random(20260101)
    refs = [V1, V2, V3]
    for _ in range(150):
        story = Story()
        spec = make_spec(V1)
        running: ModelRef | None = None
        for _ in range(10):
            if rng.random() < 0.25:
                spec = make_spec(rng.choice(refs), auto_rollback=rng.random() < 0.7)
                story.generation += 1
            prior_lkg = story.status.last_known_good if story.status else None
            target = running or spec.model.ref()
            other = None if running is None or running == spec.model.ref() else spec.model.ref()
            observed = _random_observation(rng, target, other)
            decision = story.step(spec, observed)
            _check_invariants(decision, spec, prior_lkg)
            again = decide(
                spec,
                story.generation,
                story.status,
                observed,
                T0 + timedelta(days=1),
                name="demo",
                namespace="speech",
            )
            assert (again.status, again.events, again.model_ref) == (
                decision.status,
                (),
                decision.model_ref,
            )
            running = decision.model_ref


# ------------------------------------------------------------- the whole template (22.1)


def test_a_rollback_renders_the_last_good_pod_sections_not_the_failed_ones() -> None:
    """One edit changes the version and runtime.env: the rollback renders lastKnownGood's
    model with the runtime it served with, not with the failed edit's env."""
    story = steady_v1()
    assert story.status is not None and story.status.last_known_good_spec is not None
    assert story.status.last_known_good_spec["model"]["version"] == "1.0.0"
    crashing = SpeechModelSpec.model_validate(
        {
            "model": {"uri": V2.uri, "version": V2.version, "sha256": V2.sha256},
            "replicas": 2,
            "runtime": {"env": [{"name": "CRASH", "value": "1"}]},
        }
    )
    story.step(crashing, pending_over(V1), generation=2)
    decision = story.step(
        crashing,
        deployed(V2, updated=1, available=0, old=2, old_ready=2, old_ref=V1, failing="Crash"),
    )
    assert decision.rolled_back and decision.model_ref == V1
    assert decision.spec is not None
    assert decision.spec.runtime.env == [] and decision.spec.model.ref() == V1
    assert decision.spec.replicas == 2  # what is not the pod template stays the spec's
    built = builders.build_children("demo", "speech", "uid", decision.spec, decision.model_ref)
    good = builders.build_children("demo", "speech", "uid", make_spec(V1), V1)
    assert built == good  # the same template: the old ReplicaSet serves again


def test_a_rollback_that_fails_too_says_so() -> None:
    """The last good template fails now as well (e.g. its image is gone): the status says the
    rollback fails, not "rolled back" for ever, and a Warning Event says it once."""
    story = rolled_back_v2()
    decision = story.step(make_spec(V2), deployed(V1, available=0, failing="ImagePullFailed"))
    stalled = _conditions(decision.status)["Stalled"]
    assert stalled["reason"] == "RollbackFailed"
    assert "the rollback to model version 1.0.0 fails too" in stalled["message"]
    assert decision.status["phase"] == "Failed"  # nothing ready
    assert [e.reason for e in decision.events] == ["RollbackFailed"]
    again = story.step(make_spec(V2), deployed(V1, available=0, failing="ImagePullFailed"))
    assert again.events == ()
