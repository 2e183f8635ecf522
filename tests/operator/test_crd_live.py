"""The CRD as the real API server evaluates it: every bad manifest of test_crd.py's table is
refused by kube-apiserver itself (schema, CEL rules, strict field validation), with the field
path in its message — before the operator ever sees it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kube_cluster import GROUP, PLURAL, VERSION, Cluster
from test_crd import AFFINITY, AFFINITY_TYPO, BAD_MANIFESTS, base, mutate, spec_set

# The field path the server names for each case of BAD_MANIFESTS.
FIELD_PATH = {
    "missing-uri": "spec.model.uri",
    "missing-version": "spec.model.version",
    "missing-spec": "spec",
    "ftp-uri": "spec.model.uri",
    "plain-http-uri": "spec.model.uri",
    "relative-uri": "spec.model.uri",
    "s3-uri-without-bucket": "spec.model.uri",
    "pvc-uppercase-claim": "spec.model.uri",
    "version-with-space": "spec.model.version",
    "sha256-too-short": "spec.model.sha256",
    "sha256-uppercase": "spec.model.sha256",
    "device-tpu": "spec.runtime.device",
    "replicas-negative": "spec.replicas",
    "replicas-string": "spec.replicas",
    "batch-size-zero": "spec.runtime.batching.maxBatchSize",
    "port-too-large": "spec.service.port",
    "service-type": "spec.service.type",
    "unknown-field": "spec.replica",
    "min-above-max": "spec.autoscaling",
    "default-cpu-target-without-cpu-request": "spec",
    "surge-and-unavailable-zero": "spec.rollout",
    "surge-not-a-percentage": "spec.rollout.maxSurge",
    "env-overrides-model-dir": "spec.runtime.env",
    "env-unknown-kubescribe-variable": "spec.runtime.env",
    "cache-both-kinds": "spec.model.cache",
    "cache-empty": "spec.model.cache",
    "bad-quantity": "spec.runtime.resources.limits.memory",
    "cpu-target-without-cpu-request": "spec",
    "name-not-dns": "metadata.name",
    "uri-dot-dot": "spec.model.uri",
    "pvc-uri-dot-dot": "spec.model.uri",
    "gpus-on-cpu": "spec.runtime",
    "unknown-field-in-affinity": "spec.scheduling.affinity.nodeAffinity."
    "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpresions",
    "empty-node-selector-term": "spec.scheduling.affinity.nodeAffinity."
    "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]",
    "unknown-field-in-value-from": "spec.runtime.env[0].valueFrom.secretKeyRf",
    "pod-label-reserved": "spec.pod.labels",
    "pod-annotation-reserved": "spec.pod.annotations",
    "host-path-cache-without-fixed-user": "spec",
    "cache-host-path-root": "spec.model.cache.hostPath",
    "cache-host-path-system-dir": "spec.model.cache.hostPath",
    "cache-host-path-escapes": "spec.model.cache.hostPath",
    "env-duplicate-name": "spec.runtime.env[1]",
    "routing-without-gateway": "spec.routing.parentRefs",
    "routing-name-with-slash": "spec.routing.names[0]",
    "routing-duplicate-name": "spec.routing.names[1]",
    "routing-language-not-a-code": "spec.routing.defaultForLanguages[0]",
    "strategy-unknown": "spec.rollout.strategy",
    "canary-without-strategy": "spec.rollout",
    "canary-weight-above-100": "spec.rollout.canary.steps[0].weight",
    "canary-error-ratio-above-1": "spec.rollout.canary.analysis.maxErrorRatio",
    "gate-tolerance-negative": "spec.qualityGate.werTolerance",
}


def create(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> None:
    """`kubectl create --dry-run=server` as the client library sends it (strict validation)."""
    manifest["metadata"]["namespace"] = namespace
    client = cluster.api_client()
    try:
        kubernetes.client.CustomObjectsApi(client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest, dry_run="All", field_validation="Strict"
        )
    finally:
        client.close()


@pytest.fixture(scope="module")
def crd_namespace(cluster: Cluster) -> Iterator[str]:
    cluster.create_namespace("crd-live")
    yield "crd-live"
    cluster.kubectl("delete", "namespace", "crd-live", "--wait=false")


def test_every_bad_manifest_has_its_field_path() -> None:
    assert {case for case, *_ in BAD_MANIFESTS} == set(FIELD_PATH)
    assert len(FIELD_PATH) >= 10


def test_the_base_manifest_is_accepted(cluster: Cluster, crd_namespace: str) -> None:
    create(cluster, crd_namespace, base())


@pytest.mark.parametrize(
    ("case", "change"), [pytest.param(c, ch, id=c) for c, ch, _, _ in BAD_MANIFESTS]
)
def test_the_api_server_refuses_a_bad_manifest_naming_the_field(
    cluster: Cluster, crd_namespace: str, case: str, change: Callable[[dict[str, Any]], Any]
) -> None:
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(cluster, crd_namespace, mutate(change))
    message = json.loads(refused.value.body)["message"]
    # Unknown fields are a decoding error (400) under strict field validation; all else is 422.
    assert refused.value.status == (400 if case.startswith("unknown-field") else 422), message
    assert FIELD_PATH[case] in message, message


def _kubectl_create(
    cluster: Cluster, namespace: str, manifest: dict[str, Any], validate: str
) -> subprocess.CompletedProcess[str]:
    manifest["metadata"]["namespace"] = namespace
    return cluster.kubectl(
        "create", "--dry-run=server", f"--validate={validate}", "-o", "json", "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip


def test_a_typo_in_the_affinity_is_refused_by_kubectl_as_written(
    cluster: Cluster, crd_namespace: str
) -> None:
    # Issue 22.6: `kubectl apply` validates strictly by default: the typo is named, nothing kept.
    manifest = mutate(spec_set("scheduling.affinity", AFFINITY_TYPO))
    out = _kubectl_create(cluster, crd_namespace, manifest, "strict")
    assert out.returncode != 0
    assert 'unknown field "spec.scheduling.affinity.nodeAffinity.' in out.stderr, out.stderr
    assert "matchExpresions" in out.stderr, out.stderr


def test_without_strict_validation_a_typo_is_warned_and_never_leaves_an_empty_term(
    cluster: Cluster, crd_namespace: str
) -> None:
    # A client that only asks for warnings (as many GitOps tools do): the API server prunes the
    # typo. The term it leaves empty would match no node (pods Pending for ever): refused.
    out = _kubectl_create(
        cluster, crd_namespace, mutate(spec_set("scheduling.affinity", AFFINITY_TYPO)), "warn"
    )
    assert out.returncode != 0
    assert "nodeSelectorTerms[0]" in out.stderr, out.stderr
    # A typo beside a valid term: accepted without the unknown field, with a warning saying so.
    affinity = {
        **AFFINITY,
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDurinExecution": []},
    }
    out = _kubectl_create(
        cluster, crd_namespace, mutate(spec_set("scheduling.affinity", affinity)), "warn"
    )
    assert out.returncode == 0, out.stderr
    assert "Warning: unknown field" in out.stderr and "IgnoredDurinExecution" in out.stderr
    stored = json.loads(out.stdout)["spec"]["scheduling"]["affinity"]
    assert stored == {**AFFINITY, "podAntiAffinity": {}}


def test_kubectl_scale_of_an_autoscaled_model_is_refused(
    cluster: Cluster, crd_namespace: str
) -> None:
    # Issue 22.12: the scale subresource changes spec.replicas, which autoscaling ignores:
    # `kubectl scale` succeeded and did nothing. The API server now says why it will not.
    manifest = base()
    manifest["metadata"].update(name="scaled", namespace=crd_namespace)
    cluster.kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        out = cluster.kubectl(
            "scale", "speechmodel/scaled", "-n", crd_namespace, "--replicas=5", check=False
        )
        assert out.returncode != 0
        assert "spec.replicas is not used while spec.autoscaling is set" in out.stderr, out.stderr
        # Without autoscaling, kubectl scale is what it says.
        cluster.kubectl(
            "patch", "speechmodel", "scaled", "-n", crd_namespace, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]',
        )  # fmt: skip
        cluster.kubectl("scale", "speechmodel/scaled", "-n", crd_namespace, "--replicas=5")
        got = cluster.kubectl(
            "get", "speechmodel", "scaled", "-n", crd_namespace, "-o", "jsonpath={.spec.replicas}"
        )
        assert got.stdout == "5"
    finally:
        cluster.kubectl("delete", "speechmodel", "scaled", "-n", crd_namespace, "--wait=false")
