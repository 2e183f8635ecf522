"""Observing the cluster: a SpeechModel's Deployment, ReplicaSets and pods -> `Observed`. Pure.

    observe(deployment, replicasets, pods) -> Observed
    assess(observed, ref) -> Assessment     (how far the Deployment is with running ref)

`Observed` is what `kubescribe_operator.rollout.decide` reads: the Deployment's counters and
conditions, the ready replicas per model ref (from the ReplicaSets), and per model ref the pods'
problems (why they cannot become ready) and notes (why they wait without having failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kubescribe_operator import naming, quality_gate
from kubescribe_operator.api import ModelRef

# Waiting reasons of a container that will not get better by waiting.
BAD_WAITING_REASONS = {
    "CrashLoopBackOff": "CrashLoopBackOff",
    "ImagePullBackOff": "ImagePullFailed",
    "ErrImagePull": "ImagePullFailed",
    "InvalidImageName": "ImagePullFailed",
    "CreateContainerConfigError": "ContainerConfigError",
    "CreateContainerError": "ContainerConfigError",
    "RunContainerError": "ContainerConfigError",
}
# A serving container exited (now) after this many restarts is crash-looping.
CRASH_RESTARTS = 3
MESSAGE_LIMIT = 300


class PodProblem(BaseModel):
    """Why a pod of one model ref cannot become ready."""

    model_config = ConfigDict(frozen=True)

    pod: str  # the pod (or the ReplicaSet that cannot create pods)
    container: str
    reason: str  # a condition reason: InitContainerFailed, CrashLoopBackOff, FailedCreate, ...
    message: str


class Observed(BaseModel):
    """What the operator sees of its Deployment, summarised. Empty: no Deployment yet."""

    model_config = ConfigDict(frozen=True)

    deployment_exists: bool = False
    template_ref: str | None = None  # the model-ref digest in the Deployment's pod template
    template_observed: bool = False  # the Deployment controller has seen the latest spec
    desired_replicas: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    deadline_exceeded: bool = False
    deadline_message: str = ""
    # The Deployment controller reports a rollout of its pod template under way, within its
    # progress deadline (its Progressing condition is True and not yet NewReplicaSetAvailable).
    # A scale-up or lost pods of a completed rollout keep NewReplicaSetAvailable.
    template_rolling: bool = False
    ready_by_ref: dict[str, int] = Field(default_factory=dict)
    problems_by_ref: dict[str, tuple[PodProblem, ...]] = Field(default_factory=dict)
    # Why pods wait without having failed (e.g. unschedulable: no free GPU), for messages.
    notes_by_ref: dict[str, tuple[str, ...]] = Field(default_factory=dict)


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _ref_of_template(obj: Mapping[str, Any]) -> str | None:
    ref = _get(obj, "spec", "template", "metadata", "annotations", naming.ANNOTATION_MODEL_REF)
    return str(ref) if ref is not None else None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def _terminated_failure(state: Mapping[str, Any] | None) -> str | None:
    terminated = _get(state, "terminated")
    if not isinstance(terminated, Mapping) or terminated.get("exitCode", 0) == 0:
        return None
    detail = terminated.get("message") or terminated.get("reason") or "error"
    return f"exit code {terminated.get('exitCode')}: {detail}"


def _pod_problems(pod: Mapping[str, Any]) -> list[PodProblem]:
    name = str(_get(pod, "metadata", "name") or "?")
    problems: list[PodProblem] = []

    def problem(container: str, reason: str, message: str) -> None:
        problems.append(
            PodProblem(pod=name, container=container, reason=reason, message=_short(message))
        )

    # Only what fails now counts: a container that is running again (a fetch that succeeded on
    # a retry, a runtime back after one OOM kill) is healthy, whatever its lastState and
    # restartCount say about the past.
    for status in _get(pod, "status", "initContainerStatuses") or []:
        container = str(status.get("name", "?"))
        waiting = _get(status, "state", "waiting", "reason")
        failure = _terminated_failure(status.get("state"))
        if failure is None and waiting == "CrashLoopBackOff":
            failure = _terminated_failure(status.get("lastState"))
        if failure is not None:
            problem(
                container,
                "InitContainerFailed",
                f"pod {name}: init container {container} failed ({failure})",
            )
        elif waiting in BAD_WAITING_REASONS:
            detail = _get(status, "state", "waiting", "message") or waiting
            problem(
                container,
                BAD_WAITING_REASONS[waiting],
                f"pod {name}: init container {container}: {waiting}: {detail}",
            )
    for status in _get(pod, "status", "containerStatuses") or []:
        container = str(status.get("name", "?"))
        waiting = _get(status, "state", "waiting", "reason")
        exited = _terminated_failure(status.get("state"))
        last = _terminated_failure(status.get("lastState"))
        # The model loads and transcribes badly: the runtime's quality gate refused it (its
        # verdict, measured and declared WER, is the termination message), from the first exit.
        gate = quality_gate.verdict(exited or (last if waiting else None) or "")
        if gate is not None:
            problem(container, quality_gate.REASON, f"pod {name}: {gate}")
        elif waiting in BAD_WAITING_REASONS:
            detail = last or _get(status, "state", "waiting", "message") or waiting
            problem(
                container,
                BAD_WAITING_REASONS[waiting],
                f"pod {name}: container {container}: {waiting}: {detail}",
            )
        elif exited is not None and int(status.get("restartCount", 0)) >= CRASH_RESTARTS:
            problem(
                container,
                "CrashLoopBackOff",
                f"pod {name}: container {container} exited again after {CRASH_RESTARTS}+ "
                f"restarts ({exited})",
            )
    return problems


def _replicaset_problem(rs: Mapping[str, Any]) -> PodProblem | None:
    """A ReplicaSet whose pods the API server refuses (a missing RuntimeClass or PriorityClass,
    a ResourceQuota, Pod Security): its ReplicaFailure condition carries the API's message."""
    for condition in _get(rs, "status", "conditions") or []:
        if (condition.get("type"), condition.get("status")) == ("ReplicaFailure", "True"):
            name = str(_get(rs, "metadata", "name") or "?")
            detail = condition.get("message") or condition.get("reason") or "pods not created"
            return PodProblem(
                pod=name,
                container="",
                reason="FailedCreate",
                message=_short(f"ReplicaSet {name} cannot create pods: {detail}"),
            )
    return None


def _pod_note(pod: Mapping[str, Any]) -> str | None:
    for condition in _get(pod, "status", "conditions") or []:
        if (condition.get("type"), condition.get("status")) == ("PodScheduled", "False"):
            name = _get(pod, "metadata", "name") or "?"
            detail = condition.get("message") or condition.get("reason") or "not scheduled"
            return _short(f"pod {name} is not scheduled: {detail}")
    return None


def observe(
    deployment: Mapping[str, Any] | None,
    replicasets: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
) -> Observed:
    """Summarise the Deployment, its ReplicaSets and its pods (already selected by label)."""
    if deployment is None:
        return Observed()
    status = deployment.get("status") or {}
    generation = _get(deployment, "metadata", "generation")
    observed_generation = status.get("observedGeneration")
    template_observed = observed_generation is not None and (
        generation is None or int(observed_generation) >= int(generation)
    )
    deadline = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
        ),
        None,
    )
    template_rolling = any(
        c.get("type") == "Progressing"
        and c.get("status") == "True"
        and c.get("reason") != "NewReplicaSetAvailable"
        for c in status.get("conditions") or []
    )
    ready_by_ref: dict[str, int] = {}
    problems: dict[str, list[PodProblem]] = {}
    for rs in sorted(replicasets, key=lambda r: str(_get(r, "metadata", "name"))):
        ref = _ref_of_template(rs)
        if ref is not None:
            ready = int(_get(rs, "status", "readyReplicas") or 0)
            ready_by_ref[ref] = ready_by_ref.get(ref, 0) + ready
            refused = _replicaset_problem(rs)
            if refused is not None:
                problems.setdefault(ref, []).append(refused)
    notes: dict[str, list[str]] = {}
    for pod in sorted(pods, key=lambda p: str(_get(p, "metadata", "name"))):
        if _get(pod, "metadata", "deletionTimestamp"):
            continue
        ref = _get(pod, "metadata", "annotations", naming.ANNOTATION_MODEL_REF)
        if ref is None:
            continue
        found = _pod_problems(pod)
        if found:
            problems.setdefault(str(ref), []).extend(found)
        note = _pod_note(pod)
        if note is not None:
            notes.setdefault(str(ref), []).append(note)
    replicas = _get(deployment, "spec", "replicas")
    return Observed(
        deployment_exists=True,
        template_ref=_ref_of_template(deployment),
        template_observed=template_observed,
        desired_replicas=1 if replicas is None else int(replicas),
        replicas=int(status.get("replicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        deadline_exceeded=deadline is not None,
        deadline_message=_short(str(deadline.get("message") or "")) if deadline else "",
        template_rolling=template_rolling,
        ready_by_ref=ready_by_ref,
        problems_by_ref={ref: tuple(found) for ref, found in problems.items()},
        notes_by_ref={ref: tuple(found) for ref, found in notes.items()},
    )


# ----------------------------------------------------------------------------- classify


class Progress(StrEnum):
    ABSENT = "Absent"  # no Deployment yet
    PENDING = "Pending"  # the Deployment does not run this ref yet (or the controller lags)
    ROLLING = "Rolling"  # pods are being replaced
    SCALING = "Scaling"  # every pod runs this ref, some not available yet
    COMPLETE = "Complete"  # every pod runs this ref and is available
    FAILING = "Failing"  # this ref's pods cannot become ready


@dataclass(frozen=True)
class Assessment:
    progress: Progress
    reason: str = ""
    message: str = ""


def assess(observed: Observed, ref: ModelRef) -> Assessment:
    """How far the Deployment is with running `ref`."""
    if not observed.deployment_exists:
        return Assessment(Progress.ABSENT)
    digest = ref.digest()
    if observed.template_ref != digest or not observed.template_observed:
        return Assessment(Progress.PENDING)
    problems = observed.problems_by_ref.get(digest)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return Assessment(Progress.FAILING, first.reason, first.message + more)
    notes = observed.notes_by_ref.get(digest, ())
    note = notes[0] + (f" (and {len(notes) - 1} more)" if len(notes) > 1 else "") if notes else ""
    if observed.deadline_exceeded:
        message = observed.deadline_message or "the Deployment exceeded its progress deadline"
        message = f"{message}; {note}" if note else message
        return Assessment(Progress.FAILING, "ProgressDeadlineExceeded", message)
    desired = observed.desired_replicas
    old = observed.replicas - observed.updated_replicas
    if observed.updated_replicas < desired or old > 0:
        return Assessment(Progress.ROLLING, message=note)
    if observed.available_replicas < desired:
        return Assessment(Progress.SCALING, message=note)
    return Assessment(Progress.COMPLETE)
