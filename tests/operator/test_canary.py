"""The canary step machine, pure: (spec, status, stable, canary, now, analysis) -> decision.

Each scenario walks a story from a model serving 1.0.0 to a canary of 2.0.0 and checks, at every
step, the stable Deployment's model, the canary's plan (replicas, route weight), the status
(`status.canary`, conditions, phase, history, failedVersion) and the events. After every step
the same inputs are decided again from the stored status alone (an operator restarted there, or
a resync): the same status and no events. Every status is checked against the CRD's schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from kubescribe_operator import builders, canary, crd, httproute
from kubescribe_operator.api import ModelRef
from kubescribe_operator.canary import Analysis, CanaryDecision
from kubescribe_operator.canary_children import (
    LABEL_TRACK,
    CanaryPlan,
    backends,
    canary_children,
    share,
)
from kubescribe_operator.httproute import Backend
from kubescribe_operator.observe import Observed, PodProblem
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import SpeechModelStatus, status_patch

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
V1 = ModelRef(uri="s3://bucket/stt/1", version="1.0.0")
V2 = ModelRef(uri="s3://bucket/stt/2", version="2.0.0")
V3 = ModelRef(uri="s3://bucket/stt/3", version="3.0.0")
STATUS_SCHEMA = jsonschema.Draft202012Validator(
    crd.strict_json_schema(crd.crd_schema()["properties"]["status"])
)
OK = Analysis(True, "within thresholds: 40 requests, error ratio 0")
NOTHING = Observed()
BREACH = Analysis(
    False, "error ratio 0.4 (16 of 40 requests answered 5xx) above maxErrorRatio 0.05"
)


def make_spec(
    ref: ModelRef,
    *,
    strategy: str = "Canary",
    routed: bool = True,
    hpa: bool = False,
    replicas: int = 4,
    steps: tuple[tuple[int, int], ...] = ((10, 60), (50, 60)),
    auto_rollback: bool = True,
) -> SpeechModelSpec:
    rollout: dict[str, Any] = {"strategy": strategy, "autoRollback": auto_rollback}
    if strategy == "Canary":
        rollout["canary"] = {"steps": [{"weight": w, "pauseSeconds": p} for w, p in steps]}
    wire: dict[str, Any] = {
        "model": {"uri": ref.uri, "version": ref.version},
        "replicas": replicas,
        "rollout": rollout,
    }
    if routed:
        wire["routing"] = {"parentRefs": [{"name": "shared"}]}
    if hpa:
        wire["autoscaling"] = {"minReplicas": 2, "maxReplicas": 10}
    return SpeechModelSpec.model_validate(wire)


def running(
    ref: ModelRef | None, replicas: int = 4, *, ready: int | None = None, failing: bool = False
) -> Observed:
    """A Deployment whose `replicas` pods all run `ref` (None: no Deployment)."""
    if ref is None:
        return Observed()
    ready = replicas if ready is None else ready
    problems: dict[str, tuple[PodProblem, ...]] = {}
    if failing:
        problem = PodProblem(
            pod="demo-canary-x",
            container="runtime",
            reason="CrashLoopBackOff",
            message="pod demo-canary-x: container runtime: CrashLoopBackOff: exit code 1",
        )
        problems[ref.digest()] = (problem,)
    return Observed(
        deployment_exists=True,
        template_ref=ref.digest(),
        template_observed=True,
        desired_replicas=replicas,
        replicas=replicas,
        updated_replicas=replicas,
        ready_replicas=ready,
        available_replicas=ready,
        ready_by_ref={ref.digest(): ready},
        problems_by_ref=problems,
    )


@dataclass
class Story:
    """A SpeechModel's status as the operator would have stored it, advanced step by step."""

    status: SpeechModelStatus | None = None
    now: datetime = T0
    generation: int = 1
    decisions: list[CanaryDecision] = field(default_factory=list)

    def step(
        self,
        spec: SpeechModelSpec,
        stable: Observed,
        canary_seen: Observed = NOTHING,
        *,
        analysis: Analysis | None = None,
        after: float = 0,
        generation: int | None = None,
    ) -> CanaryDecision:
        self.now += timedelta(seconds=after)
        self.generation = generation or self.generation
        args = (spec, self.generation, self.status, stable, canary_seen, self.now)
        kw: dict[str, Any] = {"analysis": analysis, "name": "demo", "namespace": "speech"}
        d = canary.decide(*args, **kw)
        STATUS_SCHEMA.validate(d.decision.status)
        # Restarted here (or a resync): the stored status alone gives the same answer.
        stored = SpeechModelStatus.model_validate(d.decision.status)
        again = canary.decide(spec, self.generation, stored, stable, canary_seen, self.now, **kw)
        assert again.decision.status == d.decision.status
        assert again.decision.events == ()
        assert (again.plan, again.decision.model_ref) == (d.plan, d.decision.model_ref)
        assert status_patch(d.decision.status, again.decision.status) == {}
        self.status = stored
        self.decisions.append(d)
        return d


def conditions(d: CanaryDecision) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in d.decision.status["conditions"]}


def reasons(d: CanaryDecision) -> list[str]:
    return [e.reason for e in d.decision.events]


def serving(spec: SpeechModelSpec, story: Story | None = None) -> Story:
    """1.0.0 rolled out and Ready (lastKnownGood)."""
    story = story or Story()
    story.step(spec, running(V1))
    assert story.status is not None and story.status.last_known_good == V1
    return story


def at_step_one(routed: bool = True, hpa: bool = False) -> tuple[Story, SpeechModelSpec]:
    """2.0.0's canary runs its first step (10 %, 60 s)."""
    story = serving(make_spec(V1, routed=routed, hpa=hpa))
    spec = make_spec(V2, routed=routed, hpa=hpa)
    story.step(spec, running(V1), generation=2)
    story.step(spec, running(V1), running(V2, 1), after=5)
    return story, spec


# ---------------------------------------------------------------------------- the story


def test_start_waits_for_the_canary_pods_then_runs_the_step() -> None:
    story = serving(make_spec(V1))
    spec = make_spec(V2)
    d = story.step(spec, running(V1), generation=2)
    cs = d.decision.status["canary"]
    assert d.decision.model_ref == V1  # the stable Deployment keeps 1.0.0
    assert d.plan == CanaryPlan(ref=V2, replicas=1, weight=0, routed=True)  # no traffic yet
    assert (cs["state"], cs["step"], cs["steps"], cs["weight"], cs["mode"]) == (
        "Starting", 1, 2, 10, "Route"
    )  # fmt: skip
    assert reasons(d) == ["CanaryStarted"]
    assert conditions(d)["Reconciling"] == ("True", "CanaryStarting")
    assert conditions(d)["Ready"][0] == "True"  # the stable version serves
    assert d.decision.status["phase"] == "Progressing"
    assert d.decision.status["targetVersion"] == "2.0.0"
    assert d.decision.status["currentVersion"] == "1.0.0"
    assert [h["result"] for h in d.decision.status["history"]] == ["Succeeded", "InProgress"]

    # Canary pod created, not ready: still starting, still no traffic.
    d = story.step(spec, running(V1), running(V2, 1, ready=0), after=3)
    assert d.decision.status["canary"]["state"] == "Starting" and d.plan is not None
    assert d.plan.weight == 0 and reasons(d) == []

    d = story.step(spec, running(V1), running(V2, 1), after=3)
    cs = d.decision.status["canary"]
    assert cs["state"] == "Running" and d.plan is not None and d.plan.weight == 10
    assert cs["nextStepAt"] == "2026-01-01T12:01:06Z" and d.wake_at == T0 + timedelta(seconds=66)
    assert reasons(d) == ["CanaryStep"]
    message = dict((c["type"], c["message"]) for c in d.decision.status["conditions"])
    assert "step 1/2 (10%)" in message["Reconciling"]
    assert "next step at 2026-01-01T12:01:06Z" in message["Reconciling"]


def test_steps_advance_on_a_good_analysis_then_promote() -> None:
    story, spec = at_step_one()
    # Before the step's end nothing moves, whatever the analysis says.
    d = story.step(spec, running(V1), running(V2, 1), analysis=OK, after=30)
    assert d.decision.status["canary"]["state"] == "Running" and reasons(d) == []
    assert not canary.analysis_due(spec, story.status, story.now)
    story.now += timedelta(seconds=30)
    assert canary.analysis_due(spec, story.status, story.now)

    d = story.step(spec, running(V1), running(V2, 1), analysis=OK)
    cs = d.decision.status["canary"]
    assert (cs["state"], cs["step"], cs["weight"]) == ("Starting", 2, 50)
    assert cs["analysis"] == OK.reason and reasons(d) == ["CanaryStepPassed"]
    # Two canary pods beside 4 stable for 50 %; the route keeps 10 % until they are ready.
    assert d.plan == CanaryPlan(ref=V2, replicas=2, weight=10, routed=True)

    d = story.step(spec, running(V1), running(V2, 2), after=4)
    assert d.plan is not None and d.plan.weight == 50 and reasons(d) == ["CanaryStep"]

    d = story.step(spec, running(V1), running(V2, 2), analysis=OK, after=60)
    assert d.decision.status["canary"]["state"] == "Promoting"
    assert reasons(d) == ["CanaryPromoting"]
    assert d.decision.model_ref == V2  # the stable Deployment rolls to 2.0.0
    assert d.plan is not None and d.plan.weight == 50  # the canary keeps serving meanwhile

    rolling = running(V2, 4, ready=2)
    d = story.step(spec, rolling, running(V2, 2), after=5)
    assert d.decision.status["canary"]["state"] == "Promoting"
    assert conditions(d)["Reconciling"] == ("True", "CanaryPromoting")

    d = story.step(spec, running(V2), running(V2, 2), after=5)
    assert d.plan is None  # all traffic to the stable Deployment, canary deleted
    assert "canary" not in d.decision.status
    assert reasons(d) == ["RolloutSucceeded", "CanaryPromoted"]
    status = d.decision.status
    assert (status["currentVersion"], status["lastKnownGood"]["version"]) == ("2.0.0", "2.0.0")
    assert status["phase"] == "Ready" and conditions(d)["Ready"] == ("True", "Ready")
    assert [h["result"] for h in status["history"]] == ["Succeeded", "Succeeded"]


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("breach", "error ratio 0.4"),
        ("crash", "CrashLoopBackOff"),
        ("deadline", "ProgressDeadlineExceeded"),
    ],
)
def test_abort_returns_all_traffic_to_stable(how: str, fragment: str) -> None:
    story, spec = at_step_one()
    if how == "breach":
        d = story.step(spec, running(V1), running(V2, 1), analysis=BREACH, after=60)
    elif how == "crash":
        d = story.step(spec, running(V1), running(V2, 1, ready=0, failing=True), after=10)
    else:
        late = running(V2, 1, ready=0).model_copy(
            update={"deadline_exceeded": True, "deadline_message": "ProgressDeadlineExceeded"}
        )
        d = story.step(spec, running(V1), late, after=10)
    status = d.decision.status
    assert d.plan is None and d.decision.model_ref == V1 and "canary" not in status
    assert reasons(d)[0] == "CanaryAborted"
    assert status["failedVersion"] == "2.0.0" and status["currentVersion"] == "1.0.0"
    assert conditions(d)["Stalled"] == ("True", "CanaryAborted")
    assert conditions(d)["Reconciling"][0] == "False"
    assert status["phase"] == "Degraded"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert fragment in stalled["message"] and "step 1/2" in stalled["message"]
    assert status["history"][-1]["result"] == "Aborted"
    # Not tried again on later resyncs; a spec change (new generation) tries again.
    d = story.step(spec, running(V1), after=600)
    assert d.plan is None and reasons(d) == []
    d = story.step(spec, running(V1), generation=3)
    assert d.plan is not None and reasons(d) == ["CanaryStarted"]


def test_abort_ignores_auto_rollback_false() -> None:
    """An aborted canary never leaves traffic on the failed version."""
    story = serving(make_spec(V1, auto_rollback=False))
    spec = make_spec(V2, auto_rollback=False)
    story.step(spec, running(V1), generation=2)
    story.step(spec, running(V1), running(V2, 1))
    d = story.step(spec, running(V1), running(V2, 1), analysis=BREACH, after=60)
    assert d.decision.model_ref == V1 and d.plan is None


def test_reverting_the_version_aborts_and_serves_the_stable_one() -> None:
    story, _ = at_step_one()
    d = story.step(make_spec(V1), running(V1), running(V2, 1), generation=3)
    status = d.decision.status
    assert d.plan is None and d.decision.model_ref == V1 and "canary" not in status
    assert reasons(d)[0] == "CanaryAborted"
    assert status["failedVersion"] == "2.0.0"
    assert conditions(d)["Ready"] == ("True", "Ready") and status["phase"] == "Ready"
    assert "Aborted" in [h["result"] for h in status["history"]]


def test_a_third_version_supersedes_the_canary() -> None:
    story, _ = at_step_one()
    d = story.step(make_spec(V3), running(V1), running(V2, 1), generation=3)
    cs = d.decision.status["canary"]
    assert (cs["model"]["version"], cs["step"], cs["state"]) == ("3.0.0", 1, "Starting")
    assert d.plan is not None and d.plan.ref == V3 and d.plan.weight == 0
    results = [f"{h['version']}:{h['result']}" for h in d.decision.status["history"]]
    assert results == ["1.0.0:Succeeded", "2.0.0:Superseded", "3.0.0:InProgress"]


def test_metrics_that_cannot_be_read_hold_the_step() -> None:
    story, spec = at_step_one()
    d = story.step(spec, running(V1), running(V2, 1), after=60)  # no analysis given
    cs = d.decision.status["canary"]
    assert (cs["state"], cs["step"]) == ("Running", 1) and "waits" in cs["message"]
    assert d.wake_at == story.now + timedelta(seconds=canary.ANALYSIS_RETRY_SECONDS)
    d = story.step(spec, running(V1), running(V2, 1), analysis=Analysis(None, "pod x: refused"))
    assert "pod x: refused" in d.decision.status["canary"]["message"]
    d = story.step(spec, running(V1), running(V2, 1), analysis=OK, after=15)
    assert d.decision.status["canary"]["step"] == 2


def test_a_first_deployment_and_a_template_change_roll_out_as_usual() -> None:
    story = Story()
    d = story.step(make_spec(V1), Observed())
    assert d.plan is None and "canary" not in d.decision.status
    assert reasons(d) == ["RolloutStarted"]
    story = serving(make_spec(V1))
    tuned = make_spec(V1, replicas=5)
    d = story.step(tuned, running(V1, 5), generation=2)
    assert d.plan is None and reasons(d) == []


def test_routing_removed_mid_canary_falls_back_to_the_replica_share() -> None:
    story, _ = at_step_one(routed=True)
    d = story.step(make_spec(V2, routed=False), running(V1), running(V2, 1), generation=3)
    cs = d.decision.status["canary"]
    assert (cs["mode"], cs["step"], cs["state"]) == ("ReplicaShare", 1, "Running")
    assert d.plan is not None and not d.plan.routed


def test_switching_to_rolling_mid_canary_removes_the_canary() -> None:
    story, _ = at_step_one()
    d = story.step(make_spec(V2, strategy="Rolling"), running(V1), running(V2, 1), generation=3)
    assert d.plan is None and d.decision.model_ref == V2
    assert reasons(d)[0] == "CanaryCancelled" and "canary" not in d.decision.status


@pytest.mark.parametrize(
    ("routed", "hpa", "stable", "weights", "expected"),
    [
        # Route: ceil(S * w / 100) canary pods; the HTTPRoute carries the weight.
        (True, False, 4, (10, 50), [(1, 10), (2, 50)]),
        # Replica share: c / (S + c) nearest the weight, at least 1 pod.
        (False, False, 4, (10, 50), [(1, 20), (4, 50)]),
        # With an HPA the stable count is whatever the HPA set (here 9), never the spec's.
        (False, True, 9, (10, 50), [(1, 10), (9, 50)]),
        (True, True, 9, (10, 50), [(1, 10), (5, 50)]),
    ],
)
def test_replicas_follow_the_weight_and_the_stable_count(
    routed: bool, hpa: bool, stable: int, weights: tuple[int, int], expected: list[tuple[int, int]]
) -> None:
    steps = tuple((w, 60) for w in weights)
    story = serving(make_spec(V1, routed=routed, hpa=hpa, replicas=stable, steps=steps))
    story.status = SpeechModelStatus.model_validate(
        story.decisions[-1].decision.status
    )  # (serving already at `stable`)
    spec = make_spec(V2, routed=routed, hpa=hpa, replicas=4 if hpa else stable, steps=steps)
    seen = []
    d = story.step(spec, running(V1, stable), generation=2)
    for _ in weights:
        assert d.plan is not None
        n = d.plan.replicas
        d = story.step(spec, running(V1, stable), running(V2, n), after=1)
        cs = d.decision.status["canary"]
        seen.append((cs["canaryReplicas"], cs["effectiveWeight"]))
        assert cs["mode"] == ("Route" if routed else "ReplicaShare")
        assert cs["stableReplicas"] == stable
        d = story.step(spec, running(V1, stable), running(V2, n), analysis=OK, after=60)
    assert seen == expected
    message = dict(
        (c["type"], c["message"]) for c in story.decisions[-2].decision.status["conditions"]
    )
    assert ("HTTPRoute weight" if routed else "replica share") in message["Reconciling"]


def test_share() -> None:
    assert share(4, 0, True).canary_replicas == 0
    assert share(4, 100, False) == share(4, 100, False).__class__(4, 50)
    assert share(0, 10, True).canary_replicas == 1


# ---------------------------------------------------------------------------- children


def _children(spec: SpeechModelSpec, plan: CanaryPlan | None) -> dict[str, dict[str, Any]]:
    built = builders.build_children("demo", "speech", "uid-1", spec, V1)
    route = httproute.build_for("demo", "speech", "uid-1", spec)
    if route is not None and not any(o["kind"] == "HTTPRoute" for o in built):
        built.append(route)  # (until build_children renders it)
    canary_deployment = (
        builders.build_deployment("demo", "speech", "uid-1", spec, plan.ref) if plan else None
    )
    out = canary_children(built, canary_deployment, "demo", spec, plan)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in out}


@pytest.mark.parametrize("hpa", [False, True])
def test_canary_children_with_a_route(hpa: bool) -> None:
    spec = make_spec(V2, hpa=hpa)
    plan = CanaryPlan(ref=V2, replicas=2, weight=10, routed=True)
    objs = _children(spec, plan)
    stable, cd = objs["Deployment/demo"], objs["Deployment/demo-canary"]
    assert stable["spec"]["template"]["metadata"]["labels"][LABEL_TRACK] == "stable"
    assert ("replicas" in stable["spec"]) is not hpa  # the HPA keeps the stable replicas
    assert cd["spec"]["replicas"] == 2
    assert cd["spec"]["selector"]["matchLabels"][LABEL_TRACK] == "canary"
    assert cd["spec"]["template"]["metadata"]["labels"][LABEL_TRACK] == "canary"
    assert cd["spec"]["template"]["metadata"]["labels"][builders.LABEL_MODEL_VERSION] == "2.0.0"
    assert cd["metadata"]["ownerReferences"] == stable["metadata"]["ownerReferences"]
    # The main Service selects both tracks (in-cluster clients); the track Services one each.
    assert LABEL_TRACK not in objs["Service/demo"]["spec"]["selector"]
    assert objs["Service/demo-stable"]["spec"]["selector"][LABEL_TRACK] == "stable"
    assert objs["Service/demo-canary"]["spec"]["selector"][LABEL_TRACK] == "canary"
    if hpa:  # the HPA scales the stable Deployment only
        assert objs["HorizontalPodAutoscaler/demo"]["spec"]["scaleTargetRef"]["name"] == "demo"
    for obj in objs.values():
        if obj["kind"] not in ("ServiceMonitor", "HTTPRoute"):
            kubernetes_validate.validate(obj, "1.37.0", strict=True)
    weighted = [
        {"name": "demo-stable", "port": 80, "weight": 90},
        {"name": "demo-canary", "port": 80, "weight": 10},
    ]
    for rule in objs["HTTPRoute/demo"]["spec"]["rules"]:
        assert rule["backendRefs"] == weighted
    assert backends("demo", spec, plan) == [
        Backend("demo-stable", 80, 90),
        Backend("demo-canary", 80, 10),
    ]
    # Between canaries the route keeps its shape, all to stable; the track Services stay.
    assert backends("demo", spec, None) == [
        Backend("demo-stable", 80, 100),
        Backend("demo-canary", 80, 0),
    ]
    assert "Deployment/demo-canary" not in _children(spec, None)
    assert "Service/demo-canary" in _children(spec, None)


def test_canary_children_without_a_route_and_without_the_strategy() -> None:
    spec = make_spec(V2, routed=False)
    plan = CanaryPlan(ref=V2, replicas=1, weight=10, routed=False)
    objs = _children(spec, plan)
    assert set(objs) >= {"Deployment/demo", "Deployment/demo-canary", "Service/demo"}
    assert "Service/demo-canary" not in objs
    assert LABEL_TRACK not in objs["Deployment/demo"]["spec"]["template"]["metadata"]["labels"]
    rolling = make_spec(V2, strategy="Rolling")
    built = builders.build_children("demo", "speech", "uid-1", rolling, V2)
    assert canary_children(built, None, "demo", rolling, None) == built
    assert backends("demo", rolling, None) == [Backend("demo", 80, 1)]
