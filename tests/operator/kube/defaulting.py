"""What a real API server does to built-in objects on every write: defaulting and omitempty.

A compare-and-patch operator must not mistake these for differences (or every resync would
write), so the emulator does the same for the kinds the operator applies: the defaults below are
the ones kube-apiserver fills in for Deployments, pod templates, containers, probes and Services,
and empty lists and nulls are dropped from built-in objects (Go's ``omitempty``). Custom
resources are stored as sent.
"""

from __future__ import annotations

import hashlib
from typing import Any

JSON = dict[str, Any]


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _probe(probe: JSON) -> None:
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("scheme", "HTTP")


def _container(container: JSON) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    latest = image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports", []):
        port.setdefault("protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        if name in container:
            _probe(container[name])


def pod_spec(spec: JSON) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        _container(container)


def deployment(obj: JSON, *, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    if creating:
        spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


def service(obj: JSON, *, creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if creating and "clusterIP" not in spec:
        digest = hashlib.sha256(str(obj.get("metadata", {}).get("name")).encode()).digest()
        spec["clusterIP"] = f"10.96.{digest[0]}.{digest[1]}"
        spec["clusterIPs"] = [spec["clusterIP"]]
        spec["ipFamilies"] = ["IPv4"]
        spec["ipFamilyPolicy"] = "SingleStack"
    for port in spec.get("ports", []):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


DEFAULTERS = {"deployments": deployment, "services": service}


def apply_defaults(plural: str | None, group: str | None, obj: JSON, *, creating: bool) -> JSON:
    """The object as the API server would store it."""
    if group not in ("", "apps", "autoscaling", "policy"):
        return obj  # custom resources: stored as sent
    obj = _drop_empty(obj)
    defaulter = DEFAULTERS.get(plural or "")
    if defaulter is not None:
        defaulter(obj, creating=creating)
    if plural == "pods":
        pod_spec(obj.setdefault("spec", {}))
    return obj
