"""The Argo CD health check (examples/argocd/health.lua), run by a real Lua interpreter (lupa).

Argo CD runs the script with the live object as the global `obj` and reads the returned table's
`status` and `message`; this harness does the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime
from pkg_helpers import rollout_scenarios

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "examples" / "argocd" / "health.lua"
ARGOCD_CM = ROOT / "examples" / "argocd" / "argocd-cm.yaml"


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    """Python JSON-like data as Lua values: dicts to tables, lists to 1-based sequences."""
    if isinstance(value, dict):
        return lua.table_from({key: to_lua(lua, item) for key, item in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, item) for item in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(HEALTH_LUA.read_text())
    return str(result["status"]), str(result["message"])


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
