"""Contract 1, the status: what the operator writes on a SpeechModel (kstatus conventions).

`SpeechModelStatus.model_validate(body["status"])` reads it back; the CRD's status schema is
generated from these models too (`kubescribe_operator.crd`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from kubescribe_operator.api import ApiModel, ModelRef

MAX_HISTORY = 10

# Ready, Reconciling and Stalled (kstatus) from the rollout; AutoscalingActive (a warning, never
# readiness) from the HPA, only with autoscaling on (kubescribe_operator.scaling).
ConditionType = Literal["Ready", "Reconciling", "Stalled", "AutoscalingActive"]
Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]
RolloutResult = Literal["InProgress", "Succeeded", "Failed", "RolledBack", "Superseded"]


class Condition(ApiModel):
    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str
    observed_generation: int | None = Field(default=None, ge=0)


class HistoryEntry(ApiModel):
    version: str
    uri: str
    sha256: str | None = None
    started: str
    finished: str | None = None
    result: RolloutResult
    message: str | None = None

    def ref(self) -> ModelRef:
        return ModelRef(uri=self.uri, version=self.version, sha256=self.sha256)


class SpeechModelStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")  # kopf keeps its own keys under status

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    phase: Phase | None = None
    current_version: str | None = None
    target_version: str | None = None
    last_known_good: ModelRef | None = None
    failed_version: str | None = None
    failed_model: ModelRef | None = Field(
        default=None, description="the model ref that failed; not retried until the spec changes"
    )
    failed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    updated_replicas: int | None = None
    selector: str | None = None
    endpoint: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
