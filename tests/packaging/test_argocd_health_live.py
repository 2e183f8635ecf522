"""The Argo CD health check (examples/argocd/health.lua) on SpeechModels as the real operator
leaves them on the real control plane: every health state it returns, seen live.

Each object is captured from the API server at the moment the cluster is in that state and
handed to the same runner as test_argocd_health.py (gopher-lua with Argo CD's library set), as
Argo CD would hand it over.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from argocd_lua import health
from kube_cluster import Cluster, OperatorProcess, eventually
from pkg_helpers import ROOT

sys.path.insert(0, str(ROOT / "tests" / "operator"))
from live import Models, condition, env_marker, is_ready, manifest


def health_of(models: Models) -> tuple[str, str]:
    obj = models.get()
    assert obj is not None
    return health(obj)


def wait_health(
    models: Models, state: str, what: str, also: Callable[[dict[str, Any]], bool] = bool
) -> tuple[str, str, dict[str, Any]]:
    def probe() -> tuple[str, str, dict[str, Any]] | None:
        obj = models.get()
        if obj is None or not also(obj.get("status") or {}):
            return None
        status, message = health(obj)
        return (status, message, obj) if status == state else None

    return eventually(probe, f"Argo CD health {state}: {what}")


def test_every_health_state_is_seen_on_live_objects(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    seen: dict[str, list[str]] = {}

    # Created, first pods held Pending: Progressing (a rollout under way).
    models.create(manifest(runtime={"device": "cpu", **env_marker("KWOK_HOLD")}))
    reconciling = lambda s: condition(s, "Reconciling").get("status") == "True"  # noqa: E731
    _, message, obj = wait_health(models, "Progressing", "first rollout held", reconciling)
    seen.setdefault("Progressing", []).append(message)

    # The pods become Ready: Healthy.
    models.release_held_pods()
    _, message, obj = wait_health(models, "Healthy", "pods ready")
    assert is_ready("1.0")(obj["status"])
    seen.setdefault("Healthy", []).append(message)

    # A spec the operator has not observed (it is stopped): Progressing, never Healthy.
    live_operator.stop()
    models.patch_spec("demo", {"rollout": {"progressDeadlineSeconds": 300}})
    status, message = health_of(models)
    assert status == "Progressing" and "observe generation 2" in message, message
    seen.setdefault("Progressing", []).append(message)
    live_operator.start()
    wait_health(models, "Healthy", "generation 2 observed")

    # A version whose pods crash-loop is rolled back: Degraded, naming the failed version.
    models.patch_spec(
        "demo",
        {
            "model": {"uri": "s3://models/demo/2.0", "version": "2.0"},
            "runtime": {"device": "cpu", **env_marker("KWOK_CRASH")},
        },
    )
    _, message, obj = wait_health(models, "Degraded", "the rollback of 2.0")
    assert obj["status"]["failedVersion"] == "2.0", obj["status"]
    seen.setdefault("Degraded", []).append(message)

    assert set(seen) == {"Progressing", "Healthy", "Degraded"}, seen
