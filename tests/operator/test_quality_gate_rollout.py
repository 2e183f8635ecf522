"""The quality gate seen from the operator (issue 19.5): the runtime's gate settings rendered
from spec.qualityGate, a pod refused by the gate named QualityGateFailed from its termination
message, and the rollback's condition (and the canary's abort, which reads the same assessment)
quoting the measured and declared WER."""

from __future__ import annotations

from typing import Any

import pytest
from kubescribe_operator import quality_gate
from kubescribe_operator.observe import Progress, assess, observe
from kubescribe_operator.pod import pod_template
from kubescribe_operator.spec import SpeechModelSpec
from test_rollout import (
    RUNNING,
    V1,
    V2,
    _deployment,
    _pod,
    containers,
    deployed,
    make_spec,
    rolling_v2,
    terminated,
    waiting,
)

VERDICT = "quality gate failed: WER 0.93 on 4 reference clips, declared 0.21 + tolerance 0.05"


def _env(spec: SpeechModelSpec) -> dict[str, str]:
    template = pod_template("demo", spec, spec.model.ref())
    (runtime,) = template["spec"]["containers"]
    return {e["name"]: e.get("value") for e in runtime["env"]}


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        ({}, ("on", "0.05")),
        ({"enabled": False}, ("off", "0.05")),
        ({"werTolerance": 0.1}, ("on", "0.1")),
    ],
)
def test_the_gate_settings_are_rendered_from_the_spec(
    gate: dict[str, Any], expected: tuple[str, str]
) -> None:
    body = {"model": {"uri": "s3://models/demo", "version": "1"}, "qualityGate": gate}
    env = _env(SpeechModelSpec.model_validate(body))
    assert (env["KUBESCRIBE_QUALITY_GATE"], env["KUBESCRIBE_QUALITY_GATE_WER_TOLERANCE"]) == (
        expected
    )
    assert env["KUBESCRIBE_EXIT_ON_LOAD_FAILURE"] == "true"  # a refused pod exits with it


def test_the_verdict_is_found_in_a_termination_message() -> None:
    assert quality_gate.verdict(VERDICT + "\n") == VERDICT
    assert quality_gate.verdict("the model cannot be loaded: not an ONNX model") is None


@pytest.mark.parametrize(
    "pod_status",
    [
        # its first exit, before any restart: permanent, no need to wait for a crash loop
        containers("runtime", terminated(3, reason="Error", message=VERDICT + "\n")),
        containers(
            "runtime",
            waiting("CrashLoopBackOff", "back-off 10s"),
            terminated(3, message=VERDICT + "\n"),
            restartCount=1,
        ),
    ],
    ids=["exited", "crash-looping"],
)
def test_a_pod_refused_by_the_gate_is_a_quality_gate_failure(pod_status: dict[str, Any]) -> None:
    seen = observe(_deployment(V2, observedGeneration=4), [], [_pod(V2, **pod_status)])
    (problem,) = seen.problems_by_ref[V2.digest()]
    assert (problem.reason, problem.message) == ("QualityGateFailed", f"pod demo-1: {VERDICT}")
    # what the canary's step reads too: its pods fail, the abort quotes the same text
    assessment = assess(seen, V2)
    assert (assessment.progress, assessment.reason) == (Progress.FAILING, "QualityGateFailed")
    assert VERDICT in assessment.message


def test_a_running_pod_is_not_judged_on_an_old_exit() -> None:
    pod = _pod(V2, **containers("runtime", RUNNING, terminated(3, message=VERDICT), restartCount=1))
    assert observe(_deployment(V2, observedGeneration=4), [], [pod]).problems_by_ref == {}


def test_a_version_refused_by_the_gate_is_rolled_back_with_both_wers_quoted() -> None:
    story = rolling_v2()
    pods = [_pod(V2, **containers("runtime", terminated(3, message=VERDICT)))]
    problems = observe(_deployment(V2, observedGeneration=4), [], pods).problems_by_ref
    observed = deployed(V2, updated=1, available=0, old=2, old_ready=2, old_ref=V1)
    observed = observed.model_copy(update={"problems_by_ref": problems})
    decision = story.step(make_spec(V2), observed)
    assert decision.model_ref == V1 and decision.rolled_back
    conditions = {c["type"]: c for c in decision.status["conditions"]}
    stalled = conditions["Stalled"]
    print(f"\nStalled: {stalled['reason']}: {stalled['message']}")
    assert (stalled["status"], stalled["reason"]) == ("True", "RolledBack")
    assert (
        f"model version {V2.version} failed (pod demo-1: {VERDICT}); rolled back"
        in (stalled["message"])
    )
    assert [e.reason for e in decision.events] == [
        "RolloutFailed",
        "QualityGateFailed",
        "RolledBack",
    ]
    assert decision.events[1].message == f"pod demo-1: {VERDICT}"
    assert decision.status["failedVersion"] == V2.version


def test_a_canary_refused_by_the_gate_is_aborted_quoting_both_wers() -> None:
    # The canary's pods never turn ready (so they never get traffic); its abort quotes the verdict
    from test_canary import V1 as STABLE
    from test_canary import V2 as CANARY
    from test_canary import make_spec as canary_spec
    from test_canary import reasons, running, serving

    story = serving(canary_spec(STABLE))
    spec = canary_spec(CANARY)
    story.step(spec, running(STABLE), generation=2)
    pods = [
        _pod(CANARY, name="demo-canary-1", **containers("runtime", terminated(3, message=VERDICT)))
    ]
    problems = observe(_deployment(CANARY, observedGeneration=4), [], pods).problems_by_ref
    canary = running(CANARY, 1, ready=0).model_copy(update={"problems_by_ref": problems})
    d = story.step(spec, running(STABLE), canary, after=10)
    assert d.plan is None and d.decision.model_ref == STABLE  # all traffic back on the stable one
    assert reasons(d)[0] == "CanaryAborted"
    stalled = next(c for c in d.decision.status["conditions"] if c["type"] == "Stalled")
    print(f"\nStalled: {stalled['reason']}: {stalled['message']}")
    assert stalled["reason"] == "CanaryAborted" and VERDICT in stalled["message"]
