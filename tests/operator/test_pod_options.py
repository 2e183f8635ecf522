"""Deliver 22.2, the model pods on real clusters: a ServiceAccount of the model's choosing (a
cloud identity for the fetch), its token mounted only when asked, image pull Secrets, extra pod
labels and annotations, and pods that leave their user to the platform (OpenShift's
restricted-v2 SCC) — checked on the builders' output."""

from __future__ import annotations

from typing import Any

import pytest
from kubescribe_operator import builders
from kubescribe_operator.spec import SpeechModelSpec
from pydantic import ValidationError
from test_builders import children, pod, spec

# OpenShift's restricted-v2 SecurityContextConstraints, as far as a pod spec can break them:
# the UID and fsGroup come from the namespace's range (a pod may not pin its own), no privilege
# escalation, every capability dropped (NET_BIND_SERVICE alone may be added), the RuntimeDefault
# seccomp profile, and only these volume types.
RESTRICTED_V2_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def restricted_v2_violations(pod_spec: dict[str, Any]) -> list[str]:
    found = []
    pinned = ("runAsUser", "runAsGroup", "fsGroup", "supplementalGroups")
    found += [f"pod {k}" for k in pinned if k in pod_spec.get("securityContext", {})]
    if pod_spec.get("hostNetwork") or pod_spec.get("hostPID") or pod_spec.get("hostIPC"):
        found.append("host namespaces")
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        security = container.get("securityContext", {})
        where = container["name"]
        found += [f"{where} {k}" for k in ("runAsUser", "runAsGroup") if k in security]
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where} may escalate")
        caps = security.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{where} capabilities {caps}")
        if security.get("privileged"):
            found.append(f"{where} privileged")
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        found += [f"volume {volume['name']}: {k}" for k in kinds - RESTRICTED_V2_VOLUMES]
    profile = pod_spec.get("securityContext", {}).get("seccompProfile", {}).get("type")
    if profile != "RuntimeDefault":
        found.append(f"seccomp {profile}")
    return found


PLATFORM = {"fixedUser": False}
SHAPES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "gpu": {"runtime": {"device": "gpu"}},
    "api keys": {"runtime": {"apiKeySecret": "keys"}},
    "pvc source": {"model": {"uri": "pvc://store/demo", "version": "1"}},
    "cache claim": {"model": {"uri": "s3://bucket/m", "version": "1", "cache": {"claimName": "c"}}},
    "credentials": {"model": {"uri": "s3://bucket/m", "version": "1", "credentialsSecret": "s3"}},
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_platform_assigned_user_passes_restricted_v2(shape: str) -> None:
    assert restricted_v2_violations(pod(spec(**SHAPES[shape], pod=PLATFORM))) == []


def test_the_fixed_user_is_what_restricted_v2_refuses() -> None:
    # The check above can fail: the default pins the image's user, as restricted (PSS) allows.
    violations = restricted_v2_violations(pod(spec()))
    assert "pod runAsUser" in violations and "pod fsGroup" in violations
    assert "runtime runAsUser" in violations and "fetch runAsUser" in violations


def test_platform_user_keeps_every_other_hardening() -> None:
    fixed, platform = pod(spec()), pod(spec(pod=PLATFORM))
    for name in ("runtime", "fetch"):
        a = next(c for c in fixed["containers"] + fixed["initContainers"] if c["name"] == name)
        b = next(
            c for c in platform["containers"] + platform["initContainers"] if c["name"] == name
        )
        dropped = {
            k: v for k, v in a["securityContext"].items() if k not in ("runAsUser", "runAsGroup")
        }
        assert b["securityContext"] == dropped
    assert platform["securityContext"]["runAsNonRoot"] is True


def test_default_pod_has_no_identity_and_no_token() -> None:
    p = pod(spec())
    assert p["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in p and "imagePullSecrets" not in p


def test_service_account_pull_secrets_labels_and_annotations_reach_the_pods() -> None:
    options = {
        "serviceAccountName": "stt-fetch",
        "imagePullSecrets": ["registry-a", "registry-b"],
        "labels": {"cost-center": "speech", "app.kubernetes.io/version": "7"},
        "annotations": {"sidecar.istio.io/inject": "false"},
    }
    deployment = children(spec(pod=options))["Deployment"]
    template = deployment["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == "stt-fetch"
    assert template["spec"]["automountServiceAccountToken"] is False
    assert template["spec"]["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
    labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
    assert labels["cost-center"] == "speech" and labels["app.kubernetes.io/version"] == "7"
    assert labels[builders.LABEL_INSTANCE] == "demo"  # the selector is untouched
    assert deployment["spec"]["selector"]["matchLabels"] == builders.selector_labels("demo")
    assert annotations["sidecar.istio.io/inject"] == "false"
    assert builders.ANNOTATION_MODEL_REF in annotations


def test_token_is_mounted_only_when_asked() -> None:
    p = pod(spec(pod={"serviceAccountName": "a", "automountServiceAccountToken": True}))
    assert p["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    "options",
    [
        {"labels": {"app.kubernetes.io/name": "x"}},
        {"labels": {"kubescribe.io/model-version": "x"}},
        {"annotations": {"kubescribe.io/model-ref": "x"}},
        {"serviceAccountName": "Not_A_Name"},
    ],
)
def test_pod_options_the_operator_owns_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SpeechModelSpec.model_validate(
            {"model": {"uri": "s3://bucket/m", "version": "1"}, "pod": options}
        )


def test_defaults_render_the_same_pod_as_before() -> None:
    # An operator upgrade must not roll every model: no pod option set, the old template.
    p = pod(spec())
    assert p["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": builders.RUN_AS,
        "runAsGroup": builders.RUN_AS,
        "fsGroup": builders.RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert (
        "gpus"
        not in SpeechModelSpec.model_validate(
            {"model": {"uri": "s3://bucket/m", "version": "1"}}
        ).runtime.dump()
    )
    gpu = pod(spec(runtime={"device": "gpu"}))["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1
