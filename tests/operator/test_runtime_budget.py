"""A runtime pod's memory, scratch volume and termination grace follow from the runtime settings
it runs with (operator/kubescribe_operator/runtime_budget.py: the documented formula)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from kubescribe_operator import builders, runtime_budget
from kubescribe_operator.runtime_budget import RuntimeSettings, memory_mib, scratch_mib
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_runtime.config import ServeConfig, settings_table

UID = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"


def spec(**runtime: Any) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate(
        {"model": {"uri": "s3://bucket/m", "version": "1.0.0"}, "runtime": runtime}
    )


def pod(s: SpeechModelSpec) -> dict[str, Any]:
    built = builders.build_children("demo", "speech", UID, s, s.model.ref())
    deployment = next(o for o in built if o["kind"] == "Deployment")
    template: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return template


def test_the_operator_knows_the_runtime_defaults_and_variables() -> None:
    variables = {name: env for name, _, env in settings_table(ServeConfig)}
    defaults = ServeConfig()
    for field in fields(RuntimeSettings):
        assert runtime_budget.ENV[field.name] == variables[field.name]
        assert getattr(RuntimeSettings(), field.name) == getattr(defaults, field.name)


def test_the_formula_with_the_defaults() -> None:
    # 1024 + 32 × (1 + 4) + (64 + 16) × 20 × 0.04 + 16 × 20 × 2 + 8 × (8 + 60 × 0.25)
    # = 2072 MiB; the limit twice that
    assert memory_mib(RuntimeSettings()) == (2072, 4144)
    assert scratch_mib(RuntimeSettings()) == 2 * 32 * 25


@pytest.mark.parametrize(
    ("runtime", "request_mib", "scratch"),
    [
        ({}, 2072, 1600),
        ({"batching": {"maxBatchSize": 4}}, 2072 - 12 * 20 * 2 - 12 * 20 * 0.04, 1600),
        ({"env": [{"name": "KUBESCRIBE_MAX_REQUESTS", "value": "64"}]}, 2072 + 32 * 5, 3200),
        ({"env": [{"name": "KUBESCRIBE_SPOOL_THRESHOLD_MB", "value": "0"}]}, 2072 - 32, 1600),
        ({"env": [{"name": "KUBESCRIBE_MAX_UPLOAD_MB", "value": "100"}]}, 2072, 6400),
        ({"env": [{"name": "KUBESCRIBE_WINDOW_SECONDS", "value": "10"}]}, 2072 - 320 - 32, 1600),
        ({"env": [{"name": "KUBESCRIBE_MAX_REQUESTS", "value": "lots"}]}, 2072, 1600),
        # realtime sessions: each holds up to its backlog of audio
        ({"env": [{"name": "KUBESCRIBE_MAX_SESSIONS", "value": "32"}]}, 2072 + 24 * 23, 1600),
        (
            {"env": [{"name": "KUBESCRIBE_SESSION_MAX_BACKLOG_SECONDS", "value": "120"}]},
            2072 + 8 * 60 * 0.25,
            1600,
        ),
        ({"env": [{"name": "KUBESCRIBE_MAX_SESSIONS", "value": "0"}]}, 2072 - 8 * 23, 1600),
    ],
    ids=[
        "defaults",
        "batch-4",
        "requests-64",
        "no-spooling",
        "upload-100",
        "window-10",
        "bad",
        "sessions-32",
        "backlog-120",
        "no-sessions",
    ],
)
def test_pods_are_sized_by_their_settings(
    runtime: dict[str, Any], request_mib: float, scratch: int
) -> None:
    p = pod(spec(**runtime))
    (container,) = p["containers"]
    request = int(container["resources"]["requests"]["memory"].removesuffix("Mi"))
    limit = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert request == pytest.approx(request_mib, abs=1) and limit == 2 * request
    volume = next(v for v in p["volumes"] if v["name"] == "scratch")
    assert volume["emptyDir"]["sizeLimit"] == f"{scratch}Mi"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "scratch")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBESCRIBE_SCRATCH_DIR"] == mount["mountPath"] == builders.SCRATCH_DIR


def test_given_resources_win() -> None:
    resources = {"requests": {"memory": "3Gi"}, "limits": {"memory": "5Gi"}}
    (container,) = pod(spec(resources=resources))["containers"]
    assert container["resources"]["requests"]["memory"] == "3Gi"
    assert container["resources"]["limits"]["memory"] == "5Gi"


@pytest.mark.parametrize(
    ("runtime", "grace"),
    [
        ({}, 5 + 30 + 10),
        ({"drainTimeoutSeconds": 600}, 5 + 600 + 10),
        # the variable the pod runs with wins over the field, here as in the pod
        ({"env": [{"name": "KUBESCRIBE_DRAIN_TIMEOUT_S", "value": "90"}]}, 5 + 90 + 10),
    ],
)
def test_termination_grace_covers_pre_stop_and_the_drain(
    runtime: dict[str, Any], grace: int
) -> None:
    p = pod(spec(**runtime))
    pre_stop = p["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop == ["sleep", str(runtime_budget.PRE_STOP_SECONDS)]
    assert p["terminationGracePeriodSeconds"] == grace


def test_a_longer_session_drain_extends_the_grace() -> None:
    settings = RuntimeSettings(drain_timeout_s=30)
    assert runtime_budget.termination_grace_seconds(settings, session_drain_s=120) == 135
