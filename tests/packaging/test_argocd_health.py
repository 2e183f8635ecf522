"""The Argo CD health check (examples/argocd/health.lua) under Argo CD's own Lua settings:
gopher-lua with only the package, base and table libraries (tests/packaging/argocd_lua.py), the
live object as the global `obj`, the returned table's `status` and `message` read back."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from argocd_lua import HEALTH_LUA, ROOT, LuaError, health, run_health
from pkg_helpers import rollout_scenarios

ARGOCD_CM = ROOT / "examples" / "argocd" / "argocd-cm.yaml"


def cond(kind: str, status: str, reason: str, message: str = "", generation: int = 3) -> dict:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def model(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kubescribe.io/v1alpha1",
        "kind": "SpeechModel",
        "metadata": {"name": "demo", "namespace": "speech", "generation": generation},
        "spec": {"model": {"uri": "s3://models/demo", "version": "1.1.0"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


READY = cond("Ready", "True", "Available", "3/3 replicas serve 1.1.0")
NOT_RECONCILING = cond("Reconciling", "False", "Reconciled")
NOT_STALLED = cond("Stalled", "False", "Progressing")

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status yet", model(None), "Progressing", "report a status"),
    (
        "operator has not observed the new generation",
        model({"observedGeneration": 2, "conditions": [READY, NOT_RECONCILING, NOT_STALLED]}),
        "Progressing",
        "observe generation 3 (observed 2)",
    ),
    (
        "no observedGeneration at all",
        model({"conditions": [READY]}),
        "Progressing",
        "observed none",
    ),
    (
        "serving the current generation",
        model({"observedGeneration": 3, "conditions": [READY, NOT_RECONCILING, NOT_STALLED]}),
        "Healthy",
        "Available: 3/3 replicas serve 1.1.0",
    ),
    (
        "rollout under way",
        model(
            {
                "observedGeneration": 3,
                "conditions": [
                    cond("Ready", "True", "Available"),
                    cond("Reconciling", "True", "RollingOut", "1/3 pods on 1.1.0"),
                    NOT_STALLED,
                ],
            }
        ),
        "Progressing",
        "RollingOut: 1/3 pods on 1.1.0",
    ),
    (
        "rolled back: still serving the old version, but stalled",
        model(
            {
                "observedGeneration": 3,
                "conditions": [
                    cond("Ready", "True", "Available"),
                    NOT_RECONCILING,
                    cond("Stalled", "True", "RolledBack", "1.1.0 never became ready"),
                ],
            }
        ),
        "Degraded",
        "RolledBack: 1.1.0 never became ready",
    ),
    (
        "stalled wins over reconciling",
        model(
            {
                "observedGeneration": 3,
                "conditions": [
                    cond("Reconciling", "True", "RollingOut"),
                    cond("Stalled", "True", "ArtifactInvalid", "sha256 mismatch"),
                ],
            }
        ),
        "Degraded",
        "ArtifactInvalid: sha256 mismatch",
    ),
    (
        "not ready and nothing in progress",
        model(
            {
                "observedGeneration": 3,
                "conditions": [
                    cond("Ready", "False", "Unavailable", "0/2 replicas ready"),
                    NOT_RECONCILING,
                    NOT_STALLED,
                ],
            }
        ),
        "Degraded",
        "Unavailable: 0/2 replicas ready",
    ),
    (
        "Ready computed for an older generation",
        model(
            {
                "observedGeneration": 3,
                "conditions": [cond("Ready", "True", "Available", generation=2)],
            }
        ),
        "Progressing",
        "generation 2",
    ),
    (
        "Ready unknown",
        model({"observedGeneration": 3, "conditions": [cond("Ready", "Unknown", "Pending")]}),
        "Progressing",
        "Pending",
    ),
    (
        "status without conditions",
        model({"observedGeneration": 3}),
        "Progressing",
        "Waiting for the Ready condition",
    ),
]


@pytest.mark.parametrize(
    ("obj", "expected", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_health(obj: dict[str, Any], expected: str, message: str) -> None:
    status, text = health(obj)
    assert status == expected, text
    assert message in text


def test_stale_observed_generation_is_never_healthy() -> None:
    # Whatever the conditions say: a spec the operator has not seen cannot be reported healthy.
    for observed in (None, 0, 1, 2):
        status: dict[str, Any] = {"conditions": [READY, NOT_RECONCILING, NOT_STALLED]}
        if observed is not None:
            status["observedGeneration"] = observed
        assert health(model(status, generation=3))[0] == "Progressing"


def test_argocd_cm_embeds_the_same_script() -> None:
    configmap = yaml.safe_load(ARGOCD_CM.read_text())
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "argocd-cm"
    key = "resource.customizations.health.kubescribe.io_SpeechModel"
    assert configmap["data"][key] == HEALTH_LUA.read_text()


def test_health_reads_the_conditions_not_the_history() -> None:
    # The operator's conditions say whether a rollout is under way (Reconciling); the history is
    # a record for humans and does not turn a not-ready, not-reconciling model into Progressing.
    status = {
        "observedGeneration": 3,
        "conditions": [cond("Ready", "False", "NoReplicaAvailable"), NOT_RECONCILING, NOT_STALLED],
        "history": [
            {"version": "1.0.0", "uri": "u", "started": "t", "result": "Succeeded"},
            {"version": "1.1.0", "uri": "u", "started": "t", "result": "InProgress"},
        ],
    }
    assert health(model(status)) == ("Degraded", "NoReplicaAvailable")
    status["conditions"][1] = cond("Reconciling", "True", "RolloutInProgress", "1/2 updated")
    assert health(model(status)) == ("Progressing", "RolloutInProgress: 1/2 updated")


SCENARIOS = rollout_scenarios()


@pytest.mark.parametrize(
    ("obj", "expected"),
    [(obj, expected) for _, obj, expected in SCENARIOS],
    ids=[what for what, _, _ in SCENARIOS],
)
def test_health_of_statuses_the_operator_writes(obj: dict[str, Any], expected: str) -> None:
    # Each status comes from the operator's own rollout decision (kubescribe_operator.rollout).
    status, message = health(obj)
    assert status == expected, message


# What Argo CD's Lua for a custom health check has and lacks (util/lua in argoproj/argo-cd:
# SkipOpenLibs, then package, base and table; `os` only as require("os") with time and date).
LIBRARY_PROBES = [
    ("string.format", 'return {status = "Healthy", message = string.format("%d", 3)}', False),
    ("method on a string", 'return {status = "Healthy", message = ("x"):upper()}', False),
    ("math.max", 'return {status = "Healthy", message = tostring(math.max(1, 2))}', False),
    ("io", 'io.write("x") return {status = "Healthy"}', False),
    ("global os", 'return {status = "Healthy", message = tostring(os.time())}', False),
    ("require os", 'local os = require("os") return {status = "Healthy", message = "ok"}', True),
    (
        "base and table",
        "local t = {} table.insert(t, tostring(#obj.items)) "
        'return {status = "Healthy", message = table.concat(t, ",") .. " " .. type(ipairs)}',
        True,
    ),
]


@pytest.mark.parametrize(
    ("script", "works"),
    [(script, works) for _, script, works in LIBRARY_PROBES],
    ids=[what for what, _, _ in LIBRARY_PROBES],
)
def test_only_the_libraries_argocd_opens_are_there(script: str, works: bool) -> None:
    # A script that uses string.format passes under a full Lua and fails in Argo CD: here too.
    obj = {"items": [1, 2]}
    if works:
        assert run_health(script, obj)["status"] == "Healthy"
    else:
        with pytest.raises(LuaError):
            run_health(script, obj)


def test_an_invalid_status_is_unknown_as_in_argocd() -> None:
    result = run_health('return {status = "Fine", message = "x"}', {})
    assert result == {"status": "Unknown", "message": "Lua returned an invalid health status"}


def test_numbers_compare_as_numbers() -> None:
    # Argo CD hands JSON integers over as Lua numbers: generation 10 > observedGeneration 9.
    status = {"observedGeneration": 9, "conditions": [READY, NOT_RECONCILING, NOT_STALLED]}
    assert health(model(status, generation=10))[0] == "Progressing"
    status["observedGeneration"] = 10
    ready = {**READY, "observedGeneration": 10}
    status["conditions"] = [ready, NOT_RECONCILING, NOT_STALLED]
    assert health(model(status, generation=10))[0] == "Healthy"


def test_argocd_cm_does_not_open_the_standard_libraries() -> None:
    # resource.customizations.useOpenLibs.<group_kind> would open them: the check must not need it.
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert not any(key.startswith("resource.customizations.useOpenLibs") for key in data)


def test_a_running_or_paused_canary_is_progressing() -> None:
    """Statuses from the operator's own canary step machine (kubescribe_operator.canary): a
    canary starting, running a step (paused until its end), holding for its metrics or being
    promoted is Progressing with the step in the message; an aborted one Degraded; a promoted
    one Healthy."""
    from datetime import UTC, datetime, timedelta

    from kubescribe_operator import canary
    from kubescribe_operator.api import ModelRef
    from kubescribe_operator.observe import Observed
    from kubescribe_operator.spec import SpeechModelSpec
    from kubescribe_operator.status import SpeechModelStatus

    v1, v2 = (ModelRef(uri=f"s3://models/demo/{v}", version=v) for v in ("1.0.0", "2.0.0"))

    def spec(ref: ModelRef) -> SpeechModelSpec:
        wire = {
            "model": {"uri": ref.uri, "version": ref.version},
            "replicas": 2,
            "rollout": {"strategy": "Canary", "canary": {"steps": [{"weight": 10}]}},
        }
        return SpeechModelSpec.model_validate(wire)

    def pods(ref: ModelRef, n: int = 2) -> Observed:
        return Observed(
            deployment_exists=True,
            template_ref=ref.digest(),
            template_observed=True,
            desired_replicas=n,
            replicas=n,
            updated_replicas=n,
            ready_replicas=n,
            available_replicas=n,
            ready_by_ref={ref.digest(): n},
        )

    now, status, generation = datetime(2026, 1, 1, tzinfo=UTC), None, 1

    def step(
        ref: ModelRef, stable: Observed, seen: Observed, analysis: canary.Analysis | None = None
    ) -> tuple[str, str]:
        nonlocal status
        d = canary.decide(spec(ref), generation, status, stable, seen, now, analysis=analysis)
        status = SpeechModelStatus.model_validate(d.decision.status)
        return health(model(d.decision.status, generation))

    assert step(v1, pods(v1), Observed())[0] == "Healthy"
    generation = 2
    assert step(v2, pods(v1), Observed())[0] == "Progressing"  # starting
    state, message = step(v2, pods(v1), pods(v2, 1))  # the step runs (paused until its end)
    assert state == "Progressing" and "step 1/1 (10%)" in message and "next step at" in message
    now += timedelta(seconds=60)
    assert step(v2, pods(v1), pods(v2, 1))[0] == "Progressing"  # waits for its metrics
    ok = canary.Analysis(True, "within thresholds")
    assert step(v2, pods(v1), pods(v2, 1), ok)[0] == "Progressing"  # promoting
    assert step(v2, pods(v2), pods(v2, 1))[0] == "Healthy"  # promoted
    generation = 3
    step(v1, pods(v2), Observed())
    step(v1, pods(v2), pods(v1, 1))
    now += timedelta(seconds=60)
    state, message = step(v1, pods(v2), pods(v1, 1), canary.Analysis(False, "error ratio 0.5"))
    assert state == "Degraded" and "error ratio 0.5" in message
