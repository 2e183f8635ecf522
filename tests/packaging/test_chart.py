"""The Helm chart, linted and rendered by real Helm (Helm v4's Go SDK through helm-python-sdk).

Rendered objects are validated against the official Kubernetes schemas (kubernetes-validate,
strict), checked for the restricted Pod Security profile, and their names and ports are
followed from one object to the next (probe -> container port, Service -> pod labels, ...).
"""

from __future__ import annotations

import copy
import re
import tarfile
import textwrap
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
    "highly-available": {"replicaCount": 3, "imagePullSecrets": [{"name": "registry.example"}]},
    "created-namespaces": {"watchNamespaces": ["speech"], "createNamespaces": True},
    "as-a-subchart": {"global": {"imageRegistry": "registry.example"}},
    "platform-assigned-user": {"fixedUser": False},
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
    """(group, kind) -> openAPIV3Schema of every CRD in the chart's crds/ directories (its own
    and its kopf-peering subchart's)."""
    schemas = {}
    for path in sorted(CHART.glob("**/crds/*.yaml")):
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
    for path in CHART.glob("**/crds/*.yaml"):
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
    assert {"crds/speechmodel.yaml", "crds/kopf-peering.yaml"} <= crds.keys()  # with the subchart's
    assert crds["crds/speechmodel.yaml"]["data"].encode() == source
    with tarfile.open(archive) as packaged:
        member = packaged.extractfile("kubescribe/crds/speechmodel.yaml")
        assert member is not None and member.read() == source


def test_kopf_peering_crds_are_not_in_the_charts_own_crds_directory() -> None:
    # Issue 22.7: `kubectl delete -f charts/kubescribe/crds/` (the uninstall) deletes what is
    # there; kopf's peering CRDs are cluster-wide and shared by every kopf operator, so they
    # live in a subchart of their own, which Helm installs with the chart.
    own = {
        doc["metadata"]["name"]
        for p in (CHART / "crds").glob("*.yaml")
        for doc in yaml.safe_load_all(p.read_text())
    }
    assert own == {"speechmodels.kubescribe.io"}
    subchart = CHART / "charts" / "kopf-peering"
    shared = {
        doc["metadata"]["name"]
        for p in (subchart / "crds").glob("*.yaml")
        for doc in yaml.safe_load_all(p.read_text())
    }
    assert shared == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert {
        "name": "kopf-peering",
        "version": yaml.safe_load((subchart / "Chart.yaml").read_text())["version"],
    } in chart["dependencies"]


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
    ports = {port["name"]: port["port"] for port in one(objects, "Service")["spec"]["ports"]}
    assert ports == {"health": 18080, "metrics": 19090}


def test_metrics_off_removes_port_service_and_flag() -> None:
    objects = render_chart({"metrics": {"enabled": False}})[0]
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [port["name"] for port in container["ports"]] == ["health"]
    # The operator serves metrics on 9090 unless told 0.
    assert "--metrics-port=0" in container["args"]
    assert [port["name"] for port in one(objects, "Service")["spec"]["ports"]] == ["health"]
    assert by_kind(objects, "ServiceMonitor") == []


def test_metrics_service_selects_the_operator_pods() -> None:
    objects = render_chart()[0]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    targets = {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert targets == {"health": "health", "metrics": "metrics"}


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
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
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


# ------------------------------------------------------------------ values the schema allows


def refusal(values: dict[str, Any]) -> str:
    """Helm's message when it refuses the values (schema or template check); '' if it renders."""
    try:
        render_chart(values)
    except helm_python.HelmError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize(
    "values",
    [
        {"global": {"imageRegistry": "registry.example", "storageClass": "fast"}},
        {"imagePullSecrets": [{"name": "registry.example.com"}, {"name": "ghcr-token"}]},
        {"peering": {"name": "team-a.kubescribe"}},
        {"metrics": {"enabled": False}, "health": {"port": 9090}},
    ],
    ids=["global-of-a-parent-chart", "dotted-pull-secret", "dotted-peering", "ports-no-metrics"],
)
def test_values_a_real_installation_uses_are_accepted(values: dict[str, Any]) -> None:
    assert refusal(values) == ""


def test_health_and_metrics_on_one_port_are_refused() -> None:
    message = refusal({"health": {"port": 9090}, "metrics": {"port": 9090}})
    assert "health.port and metrics.port are both 9090" in message


def test_peering_name_defaults_to_the_release_so_two_releases_never_share_one() -> None:
    def peering(release: str, values: dict[str, Any] | None = None) -> tuple[str, list[str]]:
        objects = render_chart(values, release=release)[0]
        args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        flag = next(arg for arg in args if arg.startswith("--peering="))
        names = [obj["metadata"]["name"] for obj in objects if obj["kind"].endswith("KopfPeering")]
        return flag.removeprefix("--peering="), names

    first, second = peering("kubescribe"), peering("team-b")
    assert first == ("kubescribe", ["kubescribe"])
    assert second == ("team-b-kubescribe", ["team-b-kubescribe"])
    assert peering("team-b", {"peering": {"name": "shared"}}) == ("shared", ["shared"])


# ------------------------------------------------------------------------ highly available


def test_one_replica_has_no_disruption_budget_and_no_spread() -> None:
    objects = render_chart()[0]
    assert by_kind(objects, "PodDisruptionBudget") == []
    assert "topologySpreadConstraints" not in one(objects, "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("replicas", [2, 3])
def test_several_replicas_get_a_disruption_budget_and_spread_over_nodes(replicas: int) -> None:
    objects = render_chart({"replicaCount": replicas})[0]
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_own_spread_constraints_replace_the_default() -> None:
    zones = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        }
    ]
    objects = render_chart({"replicaCount": 2, "topologySpreadConstraints": zones})[0]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == zones


def test_operator_pods_carry_the_chart_and_version_labels() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    labels = one(render_chart()[0], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["helm.sh/chart"] == f"kubescribe-{chart['version']}"
    assert labels["app.kubernetes.io/version"] == chart["appVersion"]


def test_helm_test_asks_the_operator_health_through_its_service() -> None:
    objects = render_chart()[0]
    (test_pod,) = [
        obj for obj in by_kind(objects, "Pod") if obj["metadata"]["annotations"]["helm.sh/hook"]
    ]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(objects, "Service")
    deployment = one(objects, "Deployment")
    # The test pod is not one of the operator's pods (the Service and the PDB never pick it).
    assert not service["spec"]["selector"].items() <= test_pod["metadata"]["labels"].items()
    (container,) = test_pod["spec"]["containers"]
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == "health")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert container["args"] == [f"http://{name}.{namespace}.svc:{port['port']}/healthz"]
    assert port["targetPort"] == "health"
    assert restricted_violations(test_pod["spec"]) == []


@pytest.mark.parametrize(("status", "exit_ok"), [(200, True), (503, False)])
def test_helm_test_script_fails_unless_health_answers(
    status: int, exit_ok: bool, tmp_path: Any
) -> None:
    # The test pod's own command, run here against a stand-in health endpoint.
    import http.server
    import subprocess
    import sys
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    test_pod = next(pod for pod in by_kind(render_chart()[0], "Pod"))
    command = test_pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "-c"]
    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        result = subprocess.run(
            [sys.executable, "-c", command[2], url], capture_output=True, timeout=60, check=False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is exit_ok, result.stderr


# --------------------------------------------------------- Argo CD's label tracking


def tracked_by_argocd(objects: list[dict[str, Any]], application: str) -> list[dict[str, Any]]:
    """What Argo CD applies with its default label tracking: it sets app.kubernetes.io/instance
    on every object it applies to the Application's name (not on pod templates)."""
    tracked = copy.deepcopy(objects)
    for obj in tracked:
        obj["metadata"].setdefault("labels", {})["app.kubernetes.io/instance"] = application
    return tracked


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("application", ["kubescribe", "kubescribe-operator", "platform-stt"])
def test_scraping_survives_argocd_label_tracking(application: str) -> None:
    # An Application named apart from its releaseName rewrites the instance label; the
    # ServiceMonitor must still find the Service, the Service and the PDB the operator pods.
    values = {"replicaCount": 2, "metrics": {"serviceMonitor": {"enabled": True}}}
    objects = tracked_by_argocd(render_chart(values)[0], application)
    service, monitor = one(objects, "Service"), one(objects, "ServiceMonitor")
    pods = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert selects(service["spec"]["selector"], pods)
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pods)


def test_service_monitor_tells_two_releases_apart() -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    first = one(render_chart(values, release="kubescribe")[0], "ServiceMonitor")
    second = one(render_chart(values, release="other")[0], "Service")
    assert not selects(first["spec"]["selector"]["matchLabels"], second["metadata"]["labels"])


# -------------------------------------------------------------------- watched namespaces


def test_watched_namespaces_are_created_only_on_request() -> None:
    watched = {"watchNamespaces": ["speech", "speech-staging", NAMESPACE]}
    assert by_kind(render_chart(watched)[0], "Namespace") == []
    objects = render_chart({**watched, "createNamespaces": True})[0]
    namespaces = by_kind(objects, "Namespace")
    # Not the release's own namespace: `helm install --create-namespace` owns that one.
    assert [ns["metadata"]["name"] for ns in namespaces] == ["speech", "speech-staging"]
    for namespace in namespaces:
        assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


@pytest.mark.parametrize(
    ("values", "namespace"),
    [({}, "speech"), ({"watchNamespaces": ["asr-prod", "asr-dev"]}, "asr-prod")],
    ids=["all-namespaces", "watched"],
)
def test_notes_deploy_the_demo_where_the_operator_watches(
    values: dict[str, Any], namespace: str
) -> None:
    from kubescribe_operator.spec import SpeechModelSpec

    notes = render_chart(values)[1]
    manifest = yaml.safe_load(
        textwrap.dedent(notes.split("<<'YAML'\n", 1)[1].split("  YAML\n", 1)[0])
    )
    assert manifest["kind"] == "SpeechModel"
    SpeechModelSpec.model_validate(manifest["spec"])
    assert manifest["metadata"]["namespace"] == namespace
    used = set(re.findall(r"kubectl -n (\S+) (?:get|describe) speechmodel", notes))
    assert used == {namespace}
    if values:
        assert "kubectl create namespace" not in notes  # a watched namespace exists already


@pytest.mark.parametrize(("fixed", "pinned"), [(True, True), (False, False)])
def test_operator_user_is_left_to_the_platform_on_request(fixed: bool, pinned: bool) -> None:
    # OpenShift's restricted-v2 SCC refuses a pod that pins a UID outside the namespace's range.
    objects, _ = render_chart({"fixedUser": fixed})
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert ("runAsUser" in security and "runAsGroup" in security) is pinned, security
    assert security["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert "runAsUser" not in container["securityContext"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
