"""Contract 1, the canary's part of the status (`status.canary`): where a canary stands. Pure data.

The step machine (`kubescribe_operator.canary`) keeps all its state here, never in memory and
never in the spec, so an operator restarted mid-canary resumes at the same step, and Argo CD,
`kubectl describe` and humans read the same facts: which version is the canary, which step of
how many, the weight, since when and when the next step is due.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kubescribe_operator.api import ApiModel, ModelRef

# Starting: the step's canary pods are being created (its clock has not started).
# Running: the step runs; at nextStepAt it is judged and the next step (or promotion) follows.
# Promoting: every step passed; the stable Deployment rolls to the canary's version while both
# keep serving, then all traffic returns to the stable Deployment and the canary goes away.
CanaryState = Literal["Starting", "Running", "Promoting"]
# Route: HTTPRoute backendRef weights (spec.routing). ReplicaShare: no route, the one Service
# spreads requests over stable and canary pods, so the share follows the pod counts.
CanaryMode = Literal["Route", "ReplicaShare"]


class CanaryStatus(ApiModel):
    model: ModelRef = Field(description="the canary's model")
    stable_version: str = Field(description="the version the stable Deployment serves")
    state: CanaryState
    mode: CanaryMode
    step: int = Field(ge=1, description="the current step, 1-based")
    steps: int = Field(ge=1)
    weight: int = Field(ge=0, le=100, description="percent of the traffic the step asks for")
    effective_weight: int = Field(
        ge=0,
        le=100,
        description="percent the canary gets as deployed (ReplicaShare: canary pods / all pods)",
    )
    canary_replicas: int = Field(ge=0)
    stable_replicas: int = Field(ge=0)
    started: str = Field(description="when the canary started")
    since: str = Field(description="when the current state began")
    next_step_at: str | None = Field(
        default=None, description="when the running step is judged and the next one follows"
    )
    analysis: str | None = Field(default=None, description="the last analysis verdict")
    message: str = ""
