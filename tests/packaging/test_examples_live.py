"""Every Kubernetes manifest in examples/ applies to a real API server with its prerequisites:
first `kubectl apply --dry-run=server` (admission and validation without a write), then for
real; and the GitOps demo models become Ready under the real operator.

The examples' `speech` namespace becomes the test's own namespace. Argo CD's Application CRD is
not part of the local control plane: a minimal stand-in (the real group, kind and scope, any
spec) is installed, so those two manifests are checked for their apiVersion, kind, namespace
and YAML only; the chart's values they carry are checked by test_examples.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_cluster import Cluster, OperatorProcess
from pkg_helpers import ROOT

EXAMPLES = ROOT / "examples"
EXAMPLE_NAMESPACE = "speech"


def manifests() -> list[tuple[Path, list[dict[str, Any]]]]:
    """Each YAML file under examples/ that holds Kubernetes objects, prerequisites first."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        objects = [d for d in docs if "apiVersion" in d and "kind" in d]
        if objects:
            found.append((path, objects))
    return sorted(found, key=lambda item: "prerequisites" not in item[0].parts)


def in_namespace(objects: list[dict[str, Any]], namespace: str) -> str:
    for obj in objects:
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") == EXAMPLE_NAMESPACE:
            meta["namespace"] = namespace
    return yaml.safe_dump_all(objects)


# Envoy Gateway's policies of examples/gateways/envoy (stand-ins, like Argo CD's Application).
ENVOY_GATEWAY_KINDS = (
    ("EnvoyExtensionPolicy", "envoyextensionpolicies"),
    ("ClientTrafficPolicy", "clienttrafficpolicies"),
    ("BackendTrafficPolicy", "backendtrafficpolicies"),
)


@pytest.fixture()
def argocd(cluster: Cluster) -> Iterator[None]:
    cluster.install_stand_in_crd("argoproj.io", "v1alpha1", "Application", "applications")
    crds = [
        cluster.install_stand_in_crd("gateway.envoyproxy.io", "v1alpha1", kind, plural)
        for kind, plural in ENVOY_GATEWAY_KINDS
    ]
    cluster.kubectl("create", "namespace", "argocd", check=False)
    yield
    cluster.kubectl("delete", "namespace", "argocd", "--wait=false", check=False)
    cluster.kubectl("delete", "crd", "applications.argoproj.io", "--wait=false", check=False)
    for crd in crds:
        cluster.kubectl("delete", "crd", crd, "--wait=false", check=False)


def test_the_examples_hold_manifests_of_every_kind_we_ship() -> None:
    kinds = {obj["kind"] for _, objects in manifests() for obj in objects}
    assert {"SpeechModel", "Application", "Secret", "PersistentVolumeClaim"} <= kinds, kinds


def test_every_example_applies_with_its_prerequisites(
    cluster: Cluster,
    namespace: str,
    argocd: None,
    live_operator: OperatorProcess,
) -> None:
    applied = []
    for path, objects in manifests():
        text = in_namespace(objects, namespace)
        rel = path.relative_to(ROOT)
        dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
        assert dry.returncode == 0, f"{rel}: {dry.stderr}"
        real = cluster.kubectl("apply", "-f", "-", input=text, check=False)
        assert real.returncode == 0, f"{rel}: {real.stderr}"
        applied.append(rel)
    assert len(applied) == len(manifests())
    # The GitOps demo models are runnable as they are: they become Ready.
    gitops = [
        obj["metadata"]["name"]
        for path, objects in manifests()
        if "gitops" in path.parts
        for obj in objects
        if obj["kind"] == "SpeechModel"
    ]
    assert gitops
    for name in gitops:
        cluster.kubectl(
            "wait", f"speechmodel/{name}", "-n", namespace, "--for=condition=Ready",
            "--timeout=120s",
        )  # fmt: skip
