"""The pydantic models of the SpeechModel API: defaults, wire names, validation, model refs."""

from __future__ import annotations

from typing import Any

import pytest
from kubescribe_operator.api import ModelRef
from kubescribe_operator.runtime_spec import RESERVED_ENV, TUNABLE_ENV
from kubescribe_operator.spec import (
    SpecError,
    SpeechModelSpec,
    parse_spec,
)
from kubescribe_operator.status import SpeechModelStatus
from kubescribe_runtime.config import ServeConfig, settings_table
from pydantic import ValidationError


def spec(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": {"uri": "https://models.example.com/a", "version": "1"}}
    body.update(overrides)
    return body


def test_minimal_spec_gets_the_documented_defaults() -> None:
    s = SpeechModelSpec.model_validate(spec())
    assert s.replicas == 1 and s.autoscaling is None
    assert s.runtime.device == "cpu" and s.runtime.model_file == "model.onnx"
    assert (s.runtime.batching.max_batch_size, s.runtime.batching.max_delay_ms) == (16, 10)
    assert (s.rollout.max_surge, s.rollout.max_unavailable) == (1, 0)
    assert s.rollout.auto_rollback is True
    assert (s.service.type, s.service.port) == ("ClusterIP", 80)
    assert s.monitoring.service_monitor.enabled is False


def test_wire_form_is_camel_case_and_round_trips() -> None:
    body = spec(
        runtime={"batching": {"maxBatchSize": 4}, "drainTimeoutSeconds": 12},
        autoscaling={"maxReplicas": 3, "targetCPUUtilization": 50, "targetRequestsInFlight": 2},
        rollout={"maxSurge": "50%", "progressDeadlineSeconds": 60},
    )
    s = SpeechModelSpec.model_validate(body)
    assert s.runtime.batching.max_batch_size == 4
    assert s.autoscaling is not None and s.autoscaling.target_cpu_utilization == 50
    wire = s.dump()
    assert wire["runtime"]["batching"]["maxBatchSize"] == 4
    assert wire["autoscaling"]["targetCPUUtilization"] == 50
    assert wire["rollout"]["maxSurge"] == "50%"
    assert "sha256" not in wire["model"]  # unset optional fields are left out
    assert SpeechModelSpec.model_validate(wire) == s


def test_models_are_immutable() -> None:
    s = SpeechModelSpec.model_validate(spec())
    with pytest.raises(ValidationError):
        s.replicas = 3  # type: ignore[misc]


def test_model_ref_digest_is_stable_and_covers_every_field() -> None:
    ref = ModelRef(uri="s3://b/m", version="1", sha256=None)
    assert ref.digest() == ModelRef(uri="s3://b/m", version="1").digest()
    assert len(ref.digest()) == 16
    variants = {
        ref.digest(),
        ref.model_copy(update={"uri": "s3://b/n"}).digest(),
        ref.model_copy(update={"version": "2"}).digest(),
        ref.model_copy(update={"sha256": "a" * 64}).digest(),
    }
    assert len(variants) == 4
    assert SpeechModelSpec.model_validate(spec()).model.ref() == ModelRef(
        uri="https://models.example.com/a", version="1"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (spec(model={"uri": "ftp://x", "version": "1"}), "model.uri"),
        (spec(replicas=-1), "replicas"),
        (
            spec(autoscaling={"minReplicas": 4, "maxReplicas": 2, "targetCPUUtilization": 1}),
            "minReplicas",
        ),
        (
            spec(autoscaling={"maxReplicas": 2}, runtime={"resources": {"requests": {}}}),
            "requests.cpu",
        ),
        (spec(model={"uri": "s3://b/m", "version": "1", "storage": "lots"}), "quantity"),
        (spec(rollout={"maxSurge": 0, "maxUnavailable": 0}), "cannot both be 0"),
        (spec(rollout={"maxUnavailable": "ten"}), "percentage"),
        (spec(rollout={"maxSurge": -1}), "non-negative"),
        (spec(model={"uri": "/m", "version": "1", "cache": {}}), "exactly one"),
        (spec(runtime={"resources": {"requests": {"cpu": "two"}}}), "quantity"),
        (spec(runtime={"threads": 2, "gpuz": 1}), "gpuz"),
    ],
)
def test_parse_spec_refuses_with_a_readable_line(body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(body)
    message = str(caught.value)
    assert fragment in message and "\n" not in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("name", RESERVED_ENV)
def test_operator_rendered_variables_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ValidationError, match=name):
        SpeechModelSpec.model_validate(spec(runtime={"env": [{"name": name, "value": "x"}]}))


def test_other_variables_can_be_set() -> None:
    s = SpeechModelSpec.model_validate(
        spec(
            runtime={
                "env": [
                    {"name": "KUBESCRIBE_MAX_QUEUE", "value": "9"},
                    {"name": "HF_HOME", "value": "/tmp"},
                ]
            }
        )
    )
    assert [e.name for e in s.runtime.env] == ["KUBESCRIBE_MAX_QUEUE", "HF_HOME"]


def test_status_reads_what_the_api_server_returns() -> None:
    status = SpeechModelStatus.model_validate(
        {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "lastKnownGood": {"uri": "/m", "version": "1"},
            "kopf": {"progress": {}},  # kopf's own bookkeeping is ignored
        }
    )
    ready = status.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert status.condition("Stalled") is None
    assert status.last_known_good == ModelRef(uri="/m", version="1")
    assert "kopf" not in status.dump()


def test_tunable_variables_are_the_runtimes_other_settings() -> None:
    serve = {variable for _, _, variable in settings_table(ServeConfig)}
    assert set(TUNABLE_ENV) == serve - set(RESERVED_ENV)


def test_an_unknown_kubescribe_variable_is_a_typo() -> None:
    with pytest.raises(ValidationError, match="KUBESCRIBE_MAX_QEUE"):
        SpeechModelSpec.model_validate(
            spec(runtime={"env": [{"name": "KUBESCRIBE_MAX_QEUE", "value": "9"}]})
        )


@pytest.mark.parametrize(
    ("autoscaling", "cpu_target"),
    [
        ({"maxReplicas": 3}, 80),  # no target at all: the HPA's default, as kubectl autoscale
        ({"maxReplicas": 3, "targetCPUUtilization": 50}, 50),
        ({"maxReplicas": 3, "targetRequestsInFlight": 4}, None),
        ({"maxReplicas": 3, "targetRequestsInFlight": 4, "targetCPUUtilization": 60}, 60),
    ],
)
def test_autoscaling_cpu_target(autoscaling: dict[str, Any], cpu_target: int | None) -> None:
    scaling = SpeechModelSpec.model_validate(spec(autoscaling=autoscaling)).autoscaling
    assert scaling is not None and scaling.cpu_target() == cpu_target


def test_artifact_storage_has_a_default() -> None:
    assert SpeechModelSpec.model_validate(spec()).model.storage == "2Gi"
