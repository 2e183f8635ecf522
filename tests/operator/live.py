"""Steps and probes of the operator's tests on the real control plane (one namespace a test).

`Models` acts as a user of the cluster would (admin credentials, the kubernetes client, field
manager `TEST_MANAGER`) and reads what the operator and the real controllers made of it; the
functions below read the operator's side: its requests in the audit log, its metrics.
"""

from __future__ import annotations

import copy
import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import kubernetes
from kube_cluster import (
    GROUP,
    OPERATOR_USER,
    PLURAL,
    VERSION,
    AuditEvent,
    Cluster,
    OperatorProcess,
    eventually,
)

Obj = dict[str, Any]
VERSION_LABEL = "kubescribe.io/model-version"
MODEL_REF = "kubescribe.io/model-ref"  # the pod template's annotation: which artifact it runs
ZERO_SHA256 = "0" * 64  # the fake nodes fail the fetch of this digest (cluster/kwok-stages.yaml)
TEST_MANAGER = "kubescribe-tests"  # the tests' user agent, so their field manager
# Model URIs the fake nodes act on (cluster/kwok-stages.yaml): pods of such a model stay Pending
# until released, or crash-loop. A rollback to the previous model cures them.
HOLD_URI, CRASH_URI = "s3://models/kwok-hold/{}", "s3://models/kwok-crash/{}"


def manifest(name: str = "demo", version: str = "1.0", **spec: Any) -> Obj:
    body: Obj = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeechModel",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"s3://models/demo/{version}", "version": version},
            "runtime": {"device": "cpu"},
            "replicas": 2,
            "rollout": {"progressDeadlineSeconds": 600},
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def condition(status: Obj, kind: str) -> Obj:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def is_ready(version: str) -> Callable[[Obj], bool]:
    def check(status: Obj) -> bool:
        return (
            status.get("phase") == "Ready"
            and status.get("currentVersion") == version
            and condition(status, "Ready").get("status") == "True"
        )

    return check


def rolling_to(version: str, updated: int) -> Callable[[Obj], bool]:
    """A rollout of ``version`` under way with ``updated`` pods of it."""
    return lambda s: (
        s.get("targetVersion") == version
        and s.get("phase") == "Progressing"
        and condition(s, "Reconciling").get("status") == "True"
        and s.get("updatedReplicas") == updated
    )


def history(status: Obj) -> list[tuple[str, str]]:
    return [(h["version"], h["result"]) for h in status["history"]]


def env_marker(name: str) -> Obj:
    """`runtime.env` that makes the fake nodes act on cue (KWOK_CRASH, KWOK_HOLD, ...)."""
    return {"env": [{"name": name, "value": "1"}]}


RELEASE = "kwok.kubescribe.io/release"  # the annotation that lets a held pod go on


def _held(pod: Obj) -> bool:
    """Whether the fake nodes hold ``pod`` until it is released (cluster/kwok-stages.yaml)."""
    spec = pod.get("spec") or {}
    env = [e for c in spec.get("containers") or [] for e in c.get("env") or []]
    init_env = [e for c in spec.get("initContainers") or [] for e in c.get("env") or []]
    return any(e.get("name") == "KWOK_HOLD" for e in env) or any(
        e.get("name") == "KUBESCRIBE_MODEL_URI" and "kwok-hold" in str(e.get("value"))
        for e in init_env
    )


class Models:
    """SpeechModels and their children in one namespace, through the admin's client."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace
        self.client = cluster.api_client()
        self.client.user_agent = TEST_MANAGER
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)

    # ----------------------------------------------------------------- writes
    def create(self, body: Obj) -> Obj:
        return dict(
            self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        )

    def patch_spec(self, name: str, patch: Obj) -> Obj:
        """A JSON merge patch of the spec (`kubectl patch --type merge`); None removes a key."""
        return dict(
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.ns, PLURAL, name, {"spec": patch}
            )
        )

    def bump(self, name: str, version: str, **model: Any) -> Obj:
        return self.patch_spec(
            name, {"model": {"uri": f"s3://models/demo/{version}", "version": version, **model}}
        )

    def delete(self, name: str = "demo") -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    # ------------------------------------------------------------------ reads
    def get(self, name: str = "demo") -> Obj | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str = "demo") -> Obj:
        return dict((self.get(name) or {}).get("status") or {})

    def wait_status(
        self, check: Callable[[Obj], bool], what: str, name: str = "demo", timeout: float = 120
    ) -> Obj:
        return eventually(
            lambda: (s := self.status(name)) and check(s) and s, what, timeout=timeout
        )

    def wait_gone(self, name: str = "demo", timeout: float = 120) -> None:
        eventually(lambda: self.get(name) is None, f"SpeechModel {name} to go", timeout=timeout)

    def deployment(self, name: str = "demo") -> Obj | None:
        return self._read(lambda: self.apps.read_namespaced_deployment(name, self.ns))

    def child(self, kind: str, name: str = "demo") -> Obj | None:
        """A child by kind: Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget."""
        reads: dict[str, Callable[[], Any]] = {
            "Deployment": lambda: self.apps.read_namespaced_deployment(name, self.ns),
            "Service": lambda: self.core.read_namespaced_service(name, self.ns),
            "HorizontalPodAutoscaler": lambda: kubernetes.client.AutoscalingV2Api(
                self.client
            ).read_namespaced_horizontal_pod_autoscaler(name, self.ns),
            "PodDisruptionBudget": lambda: kubernetes.client.PolicyV1Api(
                self.client
            ).read_namespaced_pod_disruption_budget(name, self.ns),
        }
        return self._read(reads[kind])

    def _read(self, read: Callable[[], Any]) -> Obj | None:
        try:
            return dict(self.client.sanitize_for_serialization(read()))
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self) -> list[Obj]:
        items = self.core.list_namespaced_pod(self.ns).items
        return [self.client.sanitize_for_serialization(p) for p in items]

    def pod_history(self) -> PodHistory:
        """Every state of the namespace's pods from now on, from a watch (a context manager)."""
        return PodHistory(self)

    def pods_by_version(self, live_only: bool = True) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for pod in self.pods():
            if live_only and pod["metadata"].get("deletionTimestamp"):
                continue
            counts[pod["metadata"].get("labels", {}).get(VERSION_LABEL, "?")] += 1
        return dict(counts)

    def release_held_pods(self, count: int | None = None) -> None:
        """Let pods started with KWOK_HOLD (or a `kwok-hold` model) become Ready: wait until
        ``count`` of them (default: the Deployment's replicas) exist, and release each. The
        ReplicaSet may not have created them yet when this is called (it failed under load once
        when the pods listed at the call were patched and later ones stayed held); old pods go
        as soon as the first new one is Ready: one gone meanwhile is no error."""
        patch = {"metadata": {"annotations": {RELEASE: "true"}}}

        def released() -> bool:
            want = count
            if want is None:
                want = ((self.deployment() or {}).get("spec") or {}).get("replicas")
            done = 0
            for pod in self.pods():
                meta = pod["metadata"]
                if meta.get("deletionTimestamp") or not _held(pod):
                    continue
                if (meta.get("annotations") or {}).get(RELEASE) != "true":
                    try:
                        self.core.patch_namespaced_pod(meta["name"], self.ns, patch)
                    except kubernetes.client.ApiException as exc:
                        if exc.status != 404:
                            raise
                        continue
                done += 1
            return want is not None and done >= want

        eventually(released, lambda: f"held pods to release: {self.rollout_state()}")

    def model_ref(self, name: str = "demo") -> str:
        """The artifact the Deployment's pod template runs (the operator's digest of it)."""
        deployment = self.deployment(name) or {}
        return str(deployment["spec"]["template"]["metadata"]["annotations"][MODEL_REF])

    def children(self) -> dict[str, list[str]]:
        """Names of every object of a kind a SpeechModel can own, in the namespace."""
        listings: dict[str, Callable[[], Any]] = {
            "Deployment": lambda: self.apps.list_namespaced_deployment(self.ns),
            "ReplicaSet": lambda: self.apps.list_namespaced_replica_set(self.ns),
            "Pod": lambda: self.core.list_namespaced_pod(self.ns),
            "Service": lambda: self.core.list_namespaced_service(self.ns),
            "HorizontalPodAutoscaler": lambda: kubernetes.client.AutoscalingV2Api(
                self.client
            ).list_namespaced_horizontal_pod_autoscaler(self.ns),
            "PodDisruptionBudget": lambda: kubernetes.client.PolicyV1Api(
                self.client
            ).list_namespaced_pod_disruption_budget(self.ns),
        }
        return {kind: [o.metadata.name for o in ls().items] for kind, ls in listings.items()}

    def replicasets(self) -> list[Obj]:
        items = self.apps.list_namespaced_replica_set(self.ns).items
        return [self.client.sanitize_for_serialization(r) for r in items]

    def event_reasons(self, kind: str = "SpeechModel") -> list[str]:
        events = self.core.list_namespaced_event(self.ns).items
        return [
            e.reason for e in events if e.involved_object.kind == kind for _ in range(e.count or 1)
        ]

    def rollout_state(self) -> str:
        """ReplicaSets and pods as a line each, for failure messages."""
        lines = [
            f"ReplicaSet {rs['metadata']['name']}: {rs['spec'].get('replicas')} wanted, "
            f"version {rs['spec']['template']['metadata']['labels'].get(VERSION_LABEL)}"
            for rs in self.replicasets()
        ]
        for pod in self.pods():
            meta, status = pod["metadata"], pod.get("status") or {}
            ready = [c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"]
            lines.append(
                f"Pod {meta['name']}: version {meta.get('labels', {}).get(VERSION_LABEL)}, "
                f"{status.get('phase')}, ready {ready}, "
                f"deleting {bool(meta.get('deletionTimestamp'))}, "
                f"annotations {meta.get('annotations')}"
            )
        return "\n".join(lines)

    def event_log(self, kind: str = "SpeechModel") -> list[str]:
        """Every event of ``kind`` as "reason: message (×count)", for failure messages."""
        events = self.core.list_namespaced_event(self.ns).items
        return [
            f"{e.reason}: {e.message} (x{e.count or 1})"
            for e in events
            if e.involved_object.kind == kind
        ]

    def wait_events(self, check: Callable[[list[str]], bool], what: str) -> list[str]:
        return eventually(lambda: (r := self.event_reasons()) and check(r) and r, what)


# ----------------------------------------------------------------- the operator's side
def operator_requests(
    cluster: Cluster, since: int, namespace: str | None = None, user: str = OPERATOR_USER
) -> list[AuditEvent]:
    """The operator's requests after audit offset ``since`` (in one namespace, if given)."""
    events = cluster.audit(since, user=user)
    return [e for e in events if namespace is None or e.namespace == namespace]


def operator_writes(cluster: Cluster, since: int, namespace: str | None = None) -> list[str]:
    """The operator's writes as "verb resource/name", kopf's peering excluded."""
    return [
        f"{e.verb} {e.resource}/{e.name}"
        for e in operator_requests(cluster, since, namespace)
        if e.is_write and not e.resource.endswith("kopfpeerings")
    ]


def acting_pids(cluster: Cluster, since: int, namespace: str) -> set[int]:
    """The operator processes that wrote in ``namespace`` since ``since``: the operator's own
    client names its process in its user agent, "kubescribe-operator (host/pid)"."""
    pids = set()
    for e in operator_requests(cluster, since, namespace):
        match = re.fullmatch(r"kubescribe-operator \(.*/(\d+)\)", e.user_agent)
        if e.is_write and match:
            pids.add(int(match.group(1)))
    return pids


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples with these labels."""
    total = 0.0
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reconciles(operator: OperatorProcess, trigger: str = "resync") -> float:
    return metric(operator.metrics(), "kubescribe_operator_reconciles_total", trigger=trigger)


def wait_resyncs(operator: OperatorProcess, count: int) -> None:
    """Until the operator has run ``count`` more resyncs (of any SpeechModel)."""
    start = reconciles(operator)
    eventually(lambda: reconciles(operator) >= start + count, f"{count} resyncs")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), str(response.read().decode())
    except OSError:  # refused, reset, timed out: not up yet
        return 0, ""


def pod_states(pod: Obj) -> tuple[Any, ...]:
    """A pod's name, version, phase and container states (for a wait that timed out)."""
    status = pod.get("status") or {}
    containers = (status.get("initContainerStatuses") or []) + (
        status.get("containerStatuses") or []
    )
    return (
        pod["metadata"]["name"],
        (pod["metadata"].get("labels") or {}).get(VERSION_LABEL),
        status.get("phase"),
        [
            (c["name"], c.get("ready"), c.get("restartCount"), c.get("state"), c.get("lastState"))
            for c in containers
        ],
    )


class PodHistory:
    """Every state the namespace's pods pass through, from a watch: a pod that exits and is
    deleted between two polls (a version refused at once, then rolled back) is still seen.
    The watch runs in a thread from the resourceVersion of a first list, so nothing between
    that list and the watch is missed; a 410 (the version compacted away) lists again."""

    def __init__(self, models: Models) -> None:
        self._models = models
        self._seen: list[Obj] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodHistory:
        self._version = self._list()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def seen(self) -> list[Obj]:
        with self._lock:
            return list(self._seen)

    def _keep(self, pods: list[Obj]) -> None:
        with self._lock:
            self._seen.extend(pods)

    def _list(self) -> str:
        listed = self._models.core.list_namespaced_pod(self._models.ns)
        client = self._models.client
        self._keep([client.sanitize_for_serialization(p) for p in listed.items])
        return str(listed.metadata.resource_version)

    def _run(self) -> None:
        client, core = self._models.client, self._models.core
        while not self._stop.is_set():
            try:
                stream = kubernetes.watch.Watch().stream(
                    core.list_namespaced_pod, self._models.ns,
                    resource_version=self._version, timeout_seconds=5,
                )  # fmt: skip
                for event in stream:
                    pod = client.sanitize_for_serialization(event["object"])
                    self._version = pod["metadata"]["resourceVersion"]
                    self._keep([pod])
            except kubernetes.client.ApiException as exc:
                if exc.status != 410:
                    raise
                self._version = self._list()
