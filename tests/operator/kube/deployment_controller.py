"""A stand-in for kube-controller-manager's Deployment and ReplicaSet controllers and the kubelet.

For every Deployment in the emulator it keeps one ReplicaSet per pod template (labelled with
``pod-template-hash``, owned by the Deployment, revision-annotated), runs the pods of the current
template and reports status the way Kubernetes does (``replicas``, ``updatedReplicas``,
``readyReplicas``, ``availableReplicas``, the ``Available`` and ``Progressing`` conditions with
``NewReplicaSetAvailable``/``ReplicaSetUpdated``/``ProgressDeadlineExceeded``). Old pods are only
removed once the new ones are ready (``maxUnavailable: 0``), so a failed rollout leaves the old
version serving. Going back to an earlier template reuses its ReplicaSet, like ``kubectl rollout
undo``.

What the new pods do is up to the test (:meth:`DeploymentController.behave`): become ready
(``ok``), stay starting until told otherwise (``hold``), crash-loop (``crashloop``), fail their
init container (``init-fail``, e.g. an artifact digest mismatch) or stay unschedulable
(``unschedulable``, which ends in ``ProgressDeadlineExceeded`` after ``progressDeadlineSeconds``).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import kmock

from .emulator import JSON, Emulator, dumps, owner_reference

Mode = Literal["ok", "hold", "crashloop", "init-fail", "unschedulable"]
DEPLOYMENTS = kmock.resource("apps/v1/deployments")
REPLICASETS = kmock.resource("apps/v1/replicasets")
PODS = kmock.resource("v1/pods")


def template_hash(template: JSON) -> str:
    return hashlib.sha256(dumps(template).encode()).hexdigest()[:10]


def _condition(type_: str, status: bool, reason: str, message: str) -> JSON:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }


class DeploymentController:
    """Plays the Deployment controller on the emulator's loop; see the module docstring."""

    def __init__(self, emulator: Emulator, *, tick: float = 0.05, ready_delay: float = 0.1) -> None:
        self.emulator = emulator
        self.tick = tick
        self.ready_delay = ready_delay
        self._rules: list[tuple[Callable[[JSON], bool], Mode]] = []
        self._rollout_started: dict[str, float] = {}  # deployment uid + hash -> monotonic time
        self._created: dict[str, float] = {}  # pod uid -> monotonic time
        # Rollouts that completed (deployment uid + hash): like the real controller, a scale-up
        # or lost pods afterwards keep Progressing=True/NewReplicaSetAvailable.
        self._completed: set[str] = set()
        self.paused = False

    # ---- cues for the test -------------------------------------------------------------------

    def behave(self, mode: Mode, when: str | Callable[[JSON], bool] | None = None) -> None:
        """Pods whose template matches ``when`` (a substring of its JSON, or a predicate; every
        template if None) behave as ``mode`` from now on. The latest matching rule wins."""
        if when is None:
            predicate: Callable[[JSON], bool] = lambda template: True  # noqa: E731
        elif isinstance(when, str):
            predicate = lambda template, s=when: s in dumps(template)  # noqa: E731
        else:
            predicate = when
        self._rules.append((predicate, mode))

    def mode_for(self, template: JSON) -> Mode:
        for predicate, mode in reversed(self._rules):
            if predicate(template):
                return mode
        return "ok"

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self.paused:
                async with self.emulator._lock:
                    for deployment in self.emulator.list("apps/v1/deployments"):
                        await self._reconcile(deployment)
            await asyncio.sleep(self.tick)

    def _owned(self, resource: kmock.resource, namespace: str, owner_uid: str) -> list[JSON]:
        return [
            obj
            for obj in self.emulator.list(_path(resource), namespace)
            if any(
                ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences", [])
            )
        ]

    async def _reconcile(self, deployment: JSON) -> None:
        meta, spec = deployment["metadata"], deployment.get("spec", {})
        namespace, uid = meta["namespace"], meta["uid"]
        if meta.get("deletionTimestamp"):
            return
        replicas = int(spec.get("replicas", 1))
        template = spec.get("template", {})
        digest = template_hash(template)
        replicasets = self._owned(REPLICASETS, namespace, uid)
        current = next(
            (
                rs
                for rs in replicasets
                if rs["metadata"]["labels"].get("pod-template-hash") == digest
            ),
            None,
        )
        revision = 1 + max(
            [
                0,
                *(
                    int(
                        rs["metadata"]
                        .get("annotations", {})
                        .get("deployment.kubernetes.io/revision", 0)
                    )
                    for rs in replicasets
                ),
            ]
        )
        if current is None:
            current = await self._create_replicaset(deployment, template, digest, revision)
            self._rollout_started[uid + digest] = time.monotonic()
            self._completed.discard(uid + digest)
        elif (
            current["metadata"]["name"] != max(replicasets, key=self._revision)["metadata"]["name"]
        ):
            # Going back to an earlier template (a rollback): that ReplicaSet becomes the newest.
            current = await self.emulator.store_update(
                REPLICASETS,
                namespace,
                current["metadata"]["name"],
                lambda rs, r=revision: _annotate(rs, "deployment.kubernetes.io/revision", str(r)),
            )
            self._rollout_started[uid + digest] = time.monotonic()
            self._completed.discard(uid + digest)
        started = self._rollout_started.setdefault(uid + digest, time.monotonic())

        mode = self.mode_for(template)
        new_pods = await self._scale_pods(current, replicas, mode)
        new_ready = sum(1 for p in new_pods if _pod_ready(p))
        complete = new_ready >= replicas
        old_pods: list[JSON] = []
        for rs in replicasets:
            if rs["metadata"]["name"] == current["metadata"]["name"]:
                continue
            if complete:
                await self._scale_pods(rs, 0, "ok")
            else:
                old_pods += [p for p in self._owned(PODS, namespace, rs["metadata"]["uid"])]
        all_pods = new_pods + old_pods
        ready = sum(1 for p in all_pods if _pod_ready(p))
        deadline = float(spec.get("progressDeadlineSeconds", 600))
        if complete:
            self._completed.add(uid + digest)
        if complete or (uid + digest in self._completed and not old_pods):
            progressing = _condition(
                "Progressing",
                True,
                "NewReplicaSetAvailable",
                f'ReplicaSet "{current["metadata"]["name"]}" has successfully progressed.',
            )
        elif time.monotonic() - started > deadline:
            progressing = _condition(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{current["metadata"]["name"]}" has timed out progressing.',
            )
        else:
            progressing = _condition(
                "Progressing",
                True,
                "ReplicaSetUpdated",
                f'ReplicaSet "{current["metadata"]["name"]}" is progressing.',
            )
        available = _condition(
            "Available",
            ready >= replicas,
            "MinimumReplicasAvailable" if ready >= replicas else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if ready >= replicas
            else "Deployment does not have minimum availability.",
        )
        status: JSON = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(all_pods),
            "updatedReplicas": len(new_pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [available, progressing],
        }
        if len(all_pods) - ready > 0:
            status["unavailableReplicas"] = len(all_pods) - ready
        await self._set_status(DEPLOYMENTS, deployment, status)

    @staticmethod
    def _revision(rs: JSON) -> int:
        return int(
            rs["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision", 0)
        )

    async def _create_replicaset(
        self, deployment: JSON, template: JSON, digest: str, revision: int
    ) -> JSON:
        meta = deployment["metadata"]
        labels = {**template.get("metadata", {}).get("labels", {}), "pod-template-hash": digest}
        pod_template = copy.deepcopy(template)
        pod_template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy(deployment.get("spec", {}).get("selector", {}))
        selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
        return await self.emulator.store_create(
            REPLICASETS,
            meta["namespace"],
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{meta['name']}-{digest}",
                    "labels": labels,
                    "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                    "ownerReferences": [owner_reference(deployment)],
                },
                "spec": {"replicas": 0, "selector": selector, "template": pod_template},
            },
        )

    async def _scale_pods(self, rs: JSON, replicas: int, mode: Mode) -> list[JSON]:
        namespace, name = rs["metadata"]["namespace"], rs["metadata"]["name"]
        if rs.get("spec", {}).get("replicas") != replicas:
            rs = await self.emulator.store_update(
                REPLICASETS,
                namespace,
                name,
                lambda o: {**o, "spec": {**o["spec"], "replicas": replicas}},
            )
        pods = self._owned(PODS, namespace, rs["metadata"]["uid"])
        for pod in pods[replicas:]:
            await self.emulator.store_delete(PODS, namespace, pod["metadata"]["name"])
        pods = pods[:replicas]
        template = rs["spec"]["template"]
        while len(pods) < replicas:
            pods.append(
                await self.emulator.store_create(
                    PODS,
                    namespace,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": f"{name}-{uuid.uuid4().hex[:5]}",
                            "labels": dict(template.get("metadata", {}).get("labels", {})),
                            "annotations": dict(
                                template.get("metadata", {}).get("annotations", {})
                            ),
                            "ownerReferences": [owner_reference(rs)],
                        },
                        "spec": copy.deepcopy(template.get("spec", {})),
                    },
                )
            )
        result = []
        for pod in pods:
            status = self._pod_status(pod, mode)
            result.append(await self._set_status(PODS, pod, status))
        ready = sum(1 for p in result if _pod_ready(p))
        await self._set_status(
            REPLICASETS,
            rs,
            {
                "observedGeneration": rs["metadata"].get("generation", 1),
                "replicas": len(result),
                "readyReplicas": ready,
                "availableReplicas": ready,
            },
        )
        return result

    def _pod_status(self, pod: JSON, mode: Mode) -> JSON:
        spec = pod.get("spec", {})
        containers = [c.get("name", "main") for c in spec.get("containers", [])]
        inits = [c.get("name", "init") for c in spec.get("initContainers", [])]
        age = time.monotonic() - self._created.setdefault(pod["metadata"]["uid"], time.monotonic())
        crashed = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off restarting failed container",
            }
        }
        terminated = {"terminated": {"exitCode": 1, "reason": "Error"}}

        def statuses(
            names: list[str], ready: bool, state: JSON, restarts: int = 0, **extra: Any
        ) -> list[JSON]:
            return [
                {"name": n, "ready": ready, "restartCount": restarts, "state": state, **extra}
                for n in names
            ]

        done_init = statuses(inits, False, {"terminated": {"exitCode": 0, "reason": "Completed"}})
        if mode == "unschedulable":
            return {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    }
                ],
            }
        if mode == "init-fail":
            return {
                "phase": "Pending",
                "conditions": [_condition("Ready", False, "ContainersNotReady", "")],
                "initContainerStatuses": statuses(inits, False, crashed, 3, lastState=terminated),
                "containerStatuses": statuses(
                    containers, False, {"waiting": {"reason": "PodInitializing"}}
                ),
            }
        if mode == "crashloop":
            return {
                "phase": "Running",
                "conditions": [_condition("Ready", False, "ContainersNotReady", "")],
                "initContainerStatuses": done_init,
                "containerStatuses": statuses(containers, False, crashed, 3, lastState=terminated),
            }
        ready = mode == "ok" and age >= self.ready_delay
        return {
            "phase": "Running",
            "conditions": [_condition("Ready", ready, "" if ready else "ContainersNotReady", "")],
            "initContainerStatuses": done_init,
            "containerStatuses": statuses(
                containers,
                ready,
                {"running": {}} if ready else {"waiting": {"reason": "ContainerCreating"}},
            ),
        }

    async def _set_status(self, resource: kmock.resource, obj: JSON, status: JSON) -> JSON:
        if obj.get("status") == status:
            return obj
        return await self.emulator.store_update(
            resource,
            obj["metadata"]["namespace"],
            obj["metadata"]["name"],
            lambda o: {**o, "status": status},
            subresource="status",
        )


def _pod_ready(pod: JSON) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def _annotate(obj: JSON, key: str, value: str) -> JSON:
    obj.setdefault("metadata", {}).setdefault("annotations", {})[key] = value
    return obj


def _path(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}/{resource.plural}".lstrip("/")
