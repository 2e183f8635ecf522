"""The Helm chart, linted and rendered by real Helm (Helm v4's Go SDK through helm-python-sdk).

Rendered objects are validated against the official Kubernetes schemas (kubernetes-validate,
strict), checked for the restricted Pod Security profile, and their names and ports are
followed from one object to the next (probe -> container port, Service -> pod labels, ...).
"""

from __future__ import annotations

import tarfile
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml
from pkg_helpers import CHART, NAMESPACE, ROOT, by_kind, one, render_chart

KUBERNETES_VERSION = "1.33"
# The oldest the chart supports (Chart.yaml kubeVersion) and the newest schemas available.
KUBERNETES_VERSIONS = ("1.27", "1.37")

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-two-namespaces": {"watchNamespaces": ["speech", "speech-staging"]},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}
    },
    "no-metrics-two-replicas": {"metrics": {"enabled": False}, "replicaCount": 2},
    "existing-service-account": {
        "serviceAccount": {"create": False, "name": "platform-operator"},
        "rbac": {"create": False},
    },
}


def test_kube_version_floor_is_the_oldest_validated() -> None:
    floor = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert floor == f">={KUBERNETES_VERSIONS[0]}.0-0"


def test_helm_lint_is_clean() -> None:
    report = helm_python.lint(str(CHART), strict=True, namespace=NAMESPACE)
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_helm_lint_would_report_a_broken_template(tmp_path: Any) -> None:
    # The lint above means something only if a broken chart fails it.
    broken = tmp_path / "kubescribe"
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.save_dir(str(tmp_path))
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nope.missing }}\n")
    report = helm_python.lint(str(broken), strict=True)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"])


def chart_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(group, kind) -> openAPIV3Schema of every CRD in the chart's crds/ directory."""
    schemas = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("kubernetes_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_objects_validate_against_kubernetes_schemas(
    values: dict[str, Any], kubernetes_version: str
) -> None:
    objects, _ = render_chart(values)
    custom = chart_crds()
    assert objects
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in custom:  # a custom resource of the chart's own CRDs (kopf peering)
            jsonschema.validate(obj, custom[key])
        elif obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # the Prometheus Operator's CRD is not here: test_service_monitor_*
        else:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_chart_crds_validate_and_speechmodel_crd_is_a_copy_of_the_source(tmp_path: Any) -> None:
    for path in (CHART / "crds").glob("*.yaml"):
        for crd in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)
    # A real file (a symlink is lost by tools that copy or pack the chart: git on Windows,
    # Argo CD's repo server, `helm package` from a tarball), identical to the generated one
    # (`python -m kubescribe_operator.crd --write` writes both): Helm installs and packages the
    # very bytes the operator was built and tested against.
    copy = CHART / "crds" / "speechmodel.yaml"
    assert not copy.is_symlink() and copy.is_file()
    source = (ROOT / "crds" / "speechmodel.yaml").read_bytes()
    assert copy.read_bytes() == source, "run `python -m kubescribe_operator.crd --write`"
    with helm_python.Chart.load(str(CHART)) as chart:
        crds = {crd["name"]: crd for crd in chart.crds}
        archive = chart.save(str(tmp_path))
    assert {"crds/speechmodel.yaml", "crds/kopf-peering.yaml"} <= crds.keys()
    assert crds["crds/speechmodel.yaml"]["data"].encode() == source
    with tarfile.open(archive) as packaged:
        member = packaged.extractfile("kubescribe/crds/speechmodel.yaml")
        assert member is not None and member.read() == source


def test_crd_writer_writes_the_chart_copy_too(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubescribe_operator import crd

    monkeypatch.setattr(crd, "DEFAULT_PATH", tmp_path / "crds" / "speechmodel.yaml")
    monkeypatch.setattr(crd, "CHART_PATH", tmp_path / "chart" / "crds" / "speechmodel.yaml")
    crd.main(["--write"])
    assert crd.DEFAULT_PATH.read_text() == crd.CHART_PATH.read_text() == crd.render_crd()


def test_argocd_never_deletes_or_prunes_the_crds() -> None:
    # Deleting a CRD deletes every SpeechModel (and, through owner references, every model
    # Deployment); pruning it when the operator's Application is deleted or changed is never
    # what a platform team means.
    paths = [*sorted((CHART / "crds").glob("*.yaml")), ROOT / "crds" / "speechmodel.yaml"]
    for path in paths:
        for crd in yaml.safe_load_all(path.read_text()):
            options = crd["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-options")
            assert options is not None, f"{path.name}: {crd['metadata']['name']}"
            assert set(options.split(",")) == {"Delete=false", "Prune=false"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What breaks the Pod Security Standards' restricted profile (plus a read-only root)."""
    problems = []
    pod_security = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(flag)
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"hostPath volume {volume['name']}")
    for container in pod.get("initContainers", []) + pod["containers"]:
        security = container.get("securityContext", {})
        name = container["name"]
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(security.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: no seccomp profile")
        if not security.get("readOnlyRootFilesystem"):
            problems.append(f"{name}: writable root file system")
    return problems


def test_restricted_check_catches_a_permissive_pod() -> None:
    pod = {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {}}]}
    assert len(restricted_violations(pod)) >= 5


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_operator_pod_is_restricted(values: dict[str, Any]) -> None:
    deployment = one(render_chart(values)[0], "Deployment")
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


def test_operator_pod_runs_as_the_image_user() -> None:
    # operator/Dockerfile's USER; runAsNonRoot cannot check a non-numeric one.
    user = next(
        line.split()[1]
        for line in (ROOT / "operator" / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    pod = one(render_chart()[0], "Deployment")["spec"]["template"]["spec"]
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user


def test_probes_resources_and_ports() -> None:
    container = one(render_chart()[0], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] in ports and get["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert "--liveness-port=8080" in container["args"]
    assert "--metrics-port=9090" in container["args"]


def test_ports_follow_values() -> None:
    values = {"health": {"port": 18080}, "metrics": {"port": 19090}}
    objects = render_chart(values)[0]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in container["ports"]} == {18080, 19090}
    assert {"--liveness-port=18080", "--metrics-port=19090"} <= set(container["args"])
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 19090


def test_metrics_off_removes_port_service_and_flag() -> None:
    objects = render_chart({"metrics": {"enabled": False}})[0]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [port["name"] for port in container["ports"]] == ["health"]
    # The operator serves metrics on 9090 unless told 0.
    assert "--metrics-port=0" in container["args"]
    assert by_kind(objects, "Service") == [] and by_kind(objects, "ServiceMonitor") == []


def test_metrics_service_selects_the_operator_pods() -> None:
    objects = render_chart()[0]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_service_monitor_is_optional_and_scrapes_the_metrics_service() -> None:
    assert by_kind(render_chart()[0], "ServiceMonitor") == []
    objects = render_chart(VALUE_SETS["service-monitor"])[0]
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_watch_namespaces_become_operator_flags() -> None:
    def args(values: dict[str, Any]) -> list[str]:
        deployment = one(render_chart(values)[0], "Deployment")
        result: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return result

    assert "--all-namespaces" in args({})
    scoped = args(VALUE_SETS["watch-two-namespaces"])
    assert "--all-namespaces" not in scoped
    assert [a for a in scoped if a.startswith("--namespace")] == [
        "--namespace=speech",
        "--namespace=speech-staging",
    ]


def test_service_account_is_the_one_the_pod_uses() -> None:
    objects = render_chart()[0]
    account = one(objects, "ServiceAccount")
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    existing = render_chart(VALUE_SETS["existing-service-account"])[0]
    assert by_kind(existing, "ServiceAccount") == []
    pod = one(existing, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"


def test_image_defaults_to_app_version() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    container = one(render_chart()[0], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].endswith(f":{app_version}")
    pinned = render_chart({"image": {"repository": "registry.example/op", "tag": "1.2.3"}})[0]
    container = one(pinned, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/op:1.2.3"


BAD_VALUES: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"replicas": 2},
    "unknown nested key": {"metrics": {"serviceMonitor": {"enable": True}}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "namespace not a DNS label": {"watchNamespaces": ["Speech_Models"]},
    "port out of range": {"metrics": {"port": 70000}},
    "negative replicas": {"replicaCount": -1},
    "bad log level": {"logLevel": "verbose"},
    "bad interval": {"metrics": {"serviceMonitor": {"interval": "often"}}},
    "bad quantity": {"resources": {"limits": {"memory": "lots"}}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmError):
        chart.validate_schema(values)


def test_notes_name_the_real_deployment_and_example() -> None:
    objects, notes = render_chart()
    deployment = one(objects, "Deployment")["metadata"]["name"]
    assert f"deployment/{deployment}" in notes
    for word in notes.split():
        if word.startswith("examples/"):
            assert (ROOT / word).is_file(), word
