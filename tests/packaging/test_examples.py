"""The examples an ML or platform team copies: complete, consistent with each other and the code.

- the SpeechModels cover the cases the docs promise, and everything they reference (credentials
  Secrets, claims) is shipped beside them, in the form the operator and `kubescribe fetch` use;
- the Argo CD Applications point at real paths and pass the chart's values schema, and the
  health check is registered for the CRD's real group and kind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import yaml
from pkg_helpers import CHART, ROOT

SPEECHMODELS = ROOT / "examples" / "speechmodels"
PREREQUISITES = SPEECHMODELS / "prerequisites"
ARGOCD = ROOT / "examples" / "argocd"


def load_all(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


def speechmodels() -> list[dict[str, Any]]:
    return load_all(sorted(SPEECHMODELS.glob("*.yaml")))


def prerequisites() -> list[dict[str, Any]]:
    return load_all(sorted(PREREQUISITES.glob("*.yaml")))


def find(kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    """A prerequisite object (namespace None: cluster-scoped)."""
    return next(
        (
            obj
            for obj in prerequisites()
            if obj["kind"] == kind
            and obj["metadata"]["name"] == name
            and obj["metadata"].get("namespace") == namespace
        ),
        None,
    )


def test_examples_cover_the_documented_cases() -> None:
    from kubescribe_operator.spec import SpeechModelSpec

    specs = [SpeechModelSpec.model_validate(model["spec"]) for model in speechmodels()]
    assert any(s.runtime.device == "cpu" and "models/demo" in s.model.uri for s in specs)
    assert any(s.runtime.device == "gpu" for s in specs)
    autoscaled = [s.autoscaling for s in specs if s.autoscaling]
    assert any(a.target_cpu_utilization for a in autoscaled)
    assert any(a.target_requests_in_flight for a in autoscaled)
    assert any(s.model.uri.startswith("s3://") and s.model.credentials_secret for s in specs)
    assert any(s.model.cache is not None for s in specs)


def test_prerequisites_validate_against_kubernetes_schemas() -> None:
    objects = prerequisites()
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33", strict=True)


def fetch_variables() -> set[str]:
    """The variables `kubescribe fetch` reads from a credentials Secret (runtime-config.md)."""
    text = (ROOT / "docs" / "runtime-config.md").read_text()
    credentials = text[text.index("S3: the standard") :]
    return set(re.findall(r"`((?:AWS|KUBESCRIBE)_[A-Z_]+)`", credentials))


def test_every_credentials_secret_is_shipped_with_keys_fetch_reads() -> None:
    allowed = fetch_variables()
    assert {"AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "KUBESCRIBE_HTTP_BEARER_TOKEN"} <= allowed
    referenced = [
        (model["spec"]["model"]["credentialsSecret"], model["metadata"]["namespace"])
        for model in speechmodels()
        if model["spec"]["model"].get("credentialsSecret")
    ]
    assert referenced
    for name, namespace in referenced:
        secret = find("Secret", name, namespace)
        assert secret is not None, f"no Secret {namespace}/{name} in {PREREQUISITES}"
        keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
        assert keys and keys <= allowed, f"{name}: {sorted(keys - allowed)} are not read"


def references(model: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(kind, name, namespace) of every object a SpeechModel names (namespace None: cluster)."""
    spec, namespace = model["spec"], model["metadata"]["namespace"]
    found: list[tuple[str, str, str | None]] = []
    for name in (
        spec["model"].get("credentialsSecret"),
        spec.get("runtime", {}).get("apiKeySecret"),
    ):
        if name:
            found.append(("Secret", name, namespace))
    pod = spec.get("pod", {})
    found += [("Secret", name, namespace) for name in pod.get("imagePullSecrets", [])]
    if pod.get("serviceAccountName"):
        found.append(("ServiceAccount", pod["serviceAccountName"], namespace))
    if spec.get("scheduling", {}).get("priorityClassName"):
        found.append(("PriorityClass", spec["scheduling"]["priorityClassName"], None))
    if spec["model"]["uri"].startswith("pvc://"):
        claim = spec["model"]["uri"].removeprefix("pvc://").split("/")[0]
        found.append(("PersistentVolumeClaim", claim, namespace))
    if spec["model"].get("cache", {}).get("claimName"):
        found.append(("PersistentVolumeClaim", spec["model"]["cache"]["claimName"], namespace))
    return found


def test_every_object_an_example_names_is_in_its_prerequisites() -> None:
    # Issue 22.12: gpu.yaml's PriorityClass was missing; every example applies with what
    # prerequisites/ holds (test_examples_live.py applies them all for real).
    named = [ref for model in speechmodels() for ref in references(model)]
    assert {kind for kind, _, _ in named} >= {"Secret", "ServiceAccount", "PriorityClass"}
    missing = [ref for ref in named if find(*ref) is None]
    assert not missing, f"not in {PREREQUISITES}: {missing}"


def test_every_claim_an_example_uses_is_shipped_and_shared() -> None:
    claims = set()
    for model in speechmodels():
        namespace = model["metadata"]["namespace"]
        spec_model = model["spec"]["model"]
        if spec_model["uri"].startswith("pvc://"):
            claims.add((spec_model["uri"].removeprefix("pvc://").split("/")[0], namespace))
        if spec_model.get("cache", {}).get("claimName"):
            claims.add((spec_model["cache"]["claimName"], namespace))
    assert claims
    for name, namespace in claims:
        claim = find("PersistentVolumeClaim", name, namespace)
        assert claim is not None, f"no PersistentVolumeClaim {namespace}/{name}"
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "pods on many nodes mount it"


def applications() -> dict[str, dict[str, Any]]:
    apps = {}
    for path in sorted(ARGOCD.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Application":
                assert doc["apiVersion"] == "argoproj.io/v1alpha1"
                apps[doc["metadata"]["name"]] = doc
    return apps


def test_argocd_applications_point_at_real_paths_of_a_release_tag() -> None:
    apps = applications()
    assert {"kubescribe", "speechmodels"} <= apps.keys()
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    for app in apps.values():
        assert (ROOT / app["spec"]["source"]["path"]).is_dir()
        assert app["spec"]["destination"]["namespace"]
        # A branch moves under a running cluster: an upgrade would happen on the next push.
        assert app["spec"]["source"]["targetRevision"] == f"v{chart_version}"


def test_argocd_operator_application_is_named_as_its_release() -> None:
    # Argo CD's label tracking sets app.kubernetes.io/instance to the Application's name: the
    # same as the release name, it changes nothing the chart rendered.
    app = applications()["kubescribe"]
    assert app["metadata"]["name"] == app["spec"]["source"]["helm"]["releaseName"]


def test_argocd_operator_application_values_pass_the_chart_schema() -> None:
    source = applications()["kubescribe"]["spec"]["source"]
    assert (ROOT / source["path"]).resolve() == CHART.resolve()
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(source["helm"]["valuesObject"])


def argocd_directory(source: dict[str, Any]) -> list[Path]:
    """The files Argo CD's directory source reads (`directory.recurse`; no include/exclude)."""
    directory = source.get("directory", {})
    assert not {"include", "exclude", "jsonnet"} & directory.keys(), "not modelled here"
    root = ROOT / source["path"]
    found = root.rglob("*") if directory.get("recurse") else root.glob("*")
    return sorted(p for p in found if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))


def models_application_objects() -> list[dict[str, Any]]:
    return load_all(argocd_directory(applications()["speechmodels"]["spec"]["source"]))


def test_argocd_models_application_syncs_every_manifest_of_its_path() -> None:
    # Nothing in the directory is silently skipped (prerequisites in a subfolder need recurse).
    source = applications()["speechmodels"]["spec"]["source"]
    root = ROOT / source["path"]
    every = sorted(p for p in root.rglob("*") if p.is_file())
    assert argocd_directory(source) == every
    assert any(path.parent != root for path in every), "prerequisites live in a subfolder"


def bundled_models() -> dict[str, Path]:
    """Model URIs that resolve inside the runtime image (runtime/Dockerfile copies
    examples/models to /opt/kubescribe/models) -> the artifact in this repository."""
    return {
        f"/opt/kubescribe/models/{path.parent.name}": path.parent
        for path in (ROOT / "examples" / "models").glob("*/kubescribe.yaml")
    }


def test_argocd_models_application_syncs_only_what_can_become_healthy() -> None:
    from kubescribe_operator.spec import SpeechModelSpec

    objects = models_application_objects()
    models = [obj for obj in objects if obj["kind"] == "SpeechModel"]
    others = [obj for obj in objects if obj["kind"] != "SpeechModel"]
    assert models and others
    synced = {(obj["kind"], obj["metadata"]["name"]) for obj in others}
    for obj in others:
        kubernetes_validate.validate(obj, "1.33", strict=True)
        assert "REPLACE" not in yaml.safe_dump(obj), obj["metadata"]["name"]
    for model in models:
        name = model["metadata"]["name"]
        spec = SpeechModelSpec.model_validate(model["spec"])
        # An artifact every cluster has (in the runtime image), no GPU, no credentials.
        assert spec.model.uri.removeprefix("file://") in bundled_models(), name
        assert spec.runtime.device == "cpu", name
        assert spec.model.credentials_secret is None and spec.model.cache is None, name
        # What it names exists once synced, or the API server refuses its pods.
        scheduling = spec.scheduling
        if scheduling.priority_class_name:
            assert ("PriorityClass", scheduling.priority_class_name) in synced, name
        assert not scheduling.runtime_class_name, name


def test_placeholder_examples_stay_out_of_the_synced_directory() -> None:
    # The catalogue (examples/speechmodels) has artifact URLs, credentials and GPU node labels to
    # replace: the test above would refuse it, so it means something.
    placeholders = [
        model
        for model in speechmodels()
        if model["spec"]["model"]["uri"].removeprefix("file://") not in bundled_models()
    ]
    assert placeholders
    synced = {obj["metadata"]["name"] for obj in models_application_objects()}
    assert not synced & {model["metadata"]["name"] for model in placeholders}


def test_health_check_is_registered_for_the_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "speechmodel.yaml").read_text())
    key = f"resource.customizations.health.{crd['spec']['group']}_{crd['spec']['names']['kind']}"
    configmap = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert key in configmap["data"]
