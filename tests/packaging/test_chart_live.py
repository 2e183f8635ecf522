"""The chart with the real `helm` on the local control plane (tests/kube_cluster.py).

What only a real installation shows: the values real Helm refuses, an install into watched
namespaces that do not exist, a CRD upgrade over the CRDs Helm created, the permission a child's
`blockOwnerDeletion` needs, and the uninstall order that never leaves a SpeechModel (and its
namespace) stuck on the operator's finalizer. The shared release of the fixture (`kubescribe`
in `kubescribe-system`) is never uninstalled: the tests that need to uninstall install a release
of their own, watching a namespace of their own.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_cluster import GROUP, PLURAL, VERSION, Cluster, OperatorProcess, eventually
from pkg_helpers import CHART, ROOT, by_kind, one, render_chart

pytestmark = pytest.mark.timeout(600)

# Offline (template, lint) Helm assumes the Kubernetes version it was built with; this build
# says v1.20, below the chart's floor: tell it the local control plane's.
KUBE_VERSION = ("--kube-version", "1.37.2")

# The finalizer the operator puts on every SpeechModel (handlers.py: kopf persistence settings).
OPERATOR_FINALIZER = "kubescribe.io/operator"


def demo_model(namespace: str, name: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeechModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": "/opt/kubescribe/models/demo", "version": "0.1.0"},
            "runtime": {"device": "cpu"},
            "replicas": 1,
        },
    }


def get_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", *args, "-o", "json", check=False)
    if out.returncode != 0:
        assert "NotFound" in out.stderr, out.stderr
        return None
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def kubectl_as(
    cluster: Cluster, kubeconfig: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- values real Helm refuses


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "health.port=9090", "--set", "metrics.port=9090"], "are both 9090"),
        (["--set", "replicas=2"], "replicas"),
        (["--set", "imagePullSecrets[0].name=Not_A_Secret"], "imagePullSecrets"),
        (["--set", "watchNamespaces={Speech}"], "watchNamespaces"),
    ],
    ids=["same-port", "unknown-key", "bad-secret-name", "bad-namespace"],
)
def test_real_helm_refuses_bad_values(cluster: Cluster, values: list[str], message: str) -> None:
    out = cluster.helm("template", "kubescribe", str(CHART), *KUBE_VERSION, *values, check=False)
    assert out.returncode != 0 and message in out.stderr, out.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "global.imageRegistry=registry.example"],
        ["--set", "imagePullSecrets[0].name=registry.example.com"],
        ["--set", "metrics.enabled=false", "--set", "health.port=9090"],
        ["--set", "replicaCount=3", "--set", "metrics.serviceMonitor.enabled=true"],
    ],
    ids=["defaults", "global", "dotted-secret", "one-port-without-metrics", "ha-monitored"],
)
def test_real_helm_accepts_and_lints_what_an_installation_uses(
    cluster: Cluster, values: list[str]
) -> None:
    cluster.helm("template", "kubescribe", str(CHART), *KUBE_VERSION, *values)
    lint = cluster.helm("lint", "--strict", str(CHART), *KUBE_VERSION, *values, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# ------------------------------------------------------------------ releases of a test's own


@dataclass
class Release:
    """A release of the chart in the test's namespace, watching namespaces of its own."""

    cluster: Cluster
    name: str
    namespace: str
    watched: list[str]

    def values(self, *extra: str) -> list[str]:
        watched = "{" + ",".join(self.watched) + "}"
        return ["--set", "replicaCount=0", "--set", f"watchNamespaces={watched}", *extra]

    def install(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.helm(
            "upgrade", "--install", self.name, str(CHART), "--namespace", self.namespace,
            "--wait", "--timeout", "120s", *self.values(*extra), check=check,
        )  # fmt: skip

    def rendered(self) -> list[dict[str, Any]]:
        values = {"replicaCount": 0, "watchNamespaces": self.watched}
        return render_chart(values, release=self.name)[0]

    def operator(self, tmp_path: Path) -> OperatorProcess:
        """The real operator with the arguments the chart renders, as the release's account."""
        objects = self.rendered()
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert args[0] == "operator"
        keep = [a for a in args[1:] if a.startswith(("--namespace", "--peering"))]
        config = self.cluster.token_kubeconfig(
            self.namespace, pod["serviceAccountName"], tmp_path / f"{self.name}.kubeconfig"
        )
        flags = [part for arg in keep for part in arg.split("=", 1)]
        return OperatorProcess(config, tmp_path, *flags)

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "--namespace", self.namespace, "--wait")


@pytest.fixture()
def models_namespace(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A second namespace, for the models of the test's own release."""
    name = f"{namespace[:50]}-m"
    cluster.create_namespace(name)
    yield name
    release_stuck_models(cluster, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def release_stuck_models(cluster: Cluster, namespace: str) -> None:
    """Clean-up only: take the operator's finalizer off what a test left stuck on purpose."""
    listed = get_json(cluster, PLURAL, "-n", namespace) or {"items": []}
    for model in listed["items"]:
        cluster.kubectl(
            "patch", PLURAL, model["metadata"]["name"], "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip


@pytest.fixture()
def release(cluster: Cluster, namespace: str, models_namespace: str) -> Iterator[Release]:
    own = Release(cluster, f"ks-{uuid.uuid4().hex[:6]}", namespace, [models_namespace])
    yield own
    cluster.helm("uninstall", own.name, "--namespace", namespace, check=False)


# ------------------------------------------------------------------------ watched namespaces


def test_install_stops_on_a_watched_namespace_that_does_not_exist(
    cluster: Cluster, namespace: str
) -> None:
    missing = f"{namespace[:50]}-absent"
    own = Release(cluster, f"ks-{uuid.uuid4().hex[:6]}", namespace, [missing])
    try:
        refused = own.install(check=False)
        assert refused.returncode != 0
        assert f'watchNamespaces: namespace "{missing}" does not exist' in refused.stderr
        assert "createNamespaces=true" in refused.stderr
        assert get_json(cluster, "namespace", missing) is None

        # Asked to, the chart creates it, with the Role and the peering object in it.
        own.install("--set", "createNamespaces=true")
        created = get_json(cluster, "namespace", missing)
        assert created is not None
        assert created["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert get_json(cluster, "role", f"{own.name}-kubescribe", "-n", missing)
        assert get_json(cluster, "kopfpeering", f"{own.name}-kubescribe", "-n", missing)
        own.install("--set", "createNamespaces=true")  # an upgrade keeps its own namespace

        # Uninstalled, the namespace stays (its SpeechModels would go with it).
        own.uninstall()
        kept = get_json(cluster, "namespace", missing)
        assert kept is not None and "deletionTimestamp" not in kept["metadata"]
    finally:
        cluster.helm("uninstall", own.name, "--namespace", namespace, check=False)
        cluster.kubectl("delete", "namespace", missing, "--wait=false", check=False)


def test_existing_namespace_is_not_taken_over(
    cluster: Cluster, namespace: str, release: Release
) -> None:
    # createNamespaces with a namespace someone else made: Helm could not adopt it; left alone.
    release.install("--set", "createNamespaces=true")
    watched = get_json(cluster, "namespace", release.watched[0])
    assert watched is not None
    assert "meta.helm.sh/release-name" not in watched["metadata"].get("annotations", {})


# ------------------------------------------------------------------------------ CRD upgrade


def doc_crd_upgrade_command() -> list[str]:
    """The chart README's CRD upgrade command, with its paths made absolute."""
    readme = (CHART / "README.md").read_text().replace("\\\n", " ")
    line = next(
        line.strip()
        for line in readme.splitlines()
        if line.strip().startswith("kubectl apply --server-side") and "crds/" in line
    )
    argv = shlex.split(line)[1:]
    return [str(ROOT / arg) if arg.startswith("charts/") else arg for arg in argv]


def test_crd_upgrade_over_helm_needs_the_documented_force_conflicts(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The fixture's `helm install` created the CRDs: Helm owns their fields. A new version of
    # the CRD that changes one of them is refused by a plain server-side apply.
    source = CHART / "crds" / "speechmodel.yaml"
    newer = yaml.safe_load(source.read_text())
    newer["metadata"]["labels"]["app.kubernetes.io/part-of"] = "kubescribe-next"
    newer_path = tmp_path / "speechmodel.yaml"
    newer_path.write_text(yaml.safe_dump(newer))
    crd = f"{PLURAL}.{GROUP}"
    try:
        plain = cluster.kubectl("apply", "--server-side", "-f", str(newer_path), check=False)
        assert plain.returncode != 0 and "conflict" in plain.stderr.lower(), plain.stderr
        forced = cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(newer_path), check=False
        )
        assert forced.returncode == 0, forced.stderr
        live = get_json(cluster, "crd", crd)
        assert live and live["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubescribe-next"
    finally:
        # The README's own command, word for word: every chart CRD, fields taken over.
        done = cluster.kubectl(*doc_crd_upgrade_command(), check=False)
    assert done.returncode == 0, done.stderr
    live = get_json(cluster, "crd", crd)
    assert live and live["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kubescribe"
    for peering in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        fields = (get_json(cluster, "crd", peering, "--show-managed-fields") or {})["metadata"]
        managers = {entry["manager"] for entry in fields["managedFields"]}
        assert "kubectl" in managers, f"{peering} was not applied by the documented command"


# -------------------------------------------------------- blockOwnerDeletion and finalizers


def test_block_owner_deletion_needs_update_on_speechmodel_finalizers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # The API server here runs OwnerReferencesPermissionEnforcement (as OpenShift does): a
    # child whose ownerReference blocks the owner's deletion may only be created by a user who
    # may update the owner's finalizers. The chart's Role grants it; without that rule, the
    # very request the operator makes is refused.
    cluster.apply(demo_model(namespace))
    owner = get_json(cluster, PLURAL, "demo", "-n", namespace)
    assert owner is not None
    values = {"watchNamespaces": [namespace]}
    role = next(
        r
        for r in by_kind(render_chart(values)[0], "Role")
        if r["metadata"]["namespace"] == namespace
    )
    assert any("speechmodels/finalizers" in rule["resources"] for rule in role["rules"])
    without = copy.deepcopy(role)
    without["rules"] = [r for r in role["rules"] if "speechmodels/finalizers" not in r["resources"]]

    from kubescribe_operator import builders
    from kubescribe_operator.spec import SpeechModelSpec

    spec = SpeechModelSpec.model_validate(owner["spec"])
    service = builders.build_service("demo", namespace, owner["metadata"]["uid"], spec)
    assert service["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True

    def create_child_as(rules: dict[str, Any], account: str) -> subprocess.CompletedProcess[str]:
        cluster.kubectl("create", "serviceaccount", account, "-n", namespace)
        grant = {**rules, "metadata": {"name": account, "namespace": namespace}}
        cluster.apply(grant)
        cluster.kubectl(
            "create", "rolebinding", account, "-n", namespace, f"--role={account}",
            f"--serviceaccount={namespace}:{account}",
        )  # fmt: skip
        config = cluster.token_kubeconfig(namespace, account, tmp_path / account)
        return kubectl_as(
            cluster, config, "create", "--dry-run=server", "-f", "-", "-o", "name",
            input=json.dumps(service),
        )  # fmt: skip

    granted = create_child_as(role, "with-finalizers")
    assert granted.returncode == 0, granted.stderr
    refused = create_child_as(without, "without-finalizers")
    assert refused.returncode != 0
    assert "blockOwnerDeletion" in refused.stderr, refused.stderr


# ---------------------------------------------------------------------------- uninstalling


def uninstall_steps(release: Release, models_namespace: str) -> list[list[str]]:
    """The chart README's uninstall commands for this release: SpeechModels of its watched
    namespace (not the whole shared cluster), its name and namespace; the CRDs, which other
    tests use, are deleted with --dry-run=server only."""
    readme = (CHART / "README.md").read_text()
    section = readme[readme.index("## Uninstall") :]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block
    steps = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        argv = shlex.split(line)
        if not argv:
            continue
        argv = [
            {"--all-namespaces": f"--namespace={models_namespace}"}.get(a, a)
            for a in argv
            if a != "-A"
        ]
        if argv[0] == "helm":
            argv = [release.name if a == "kubescribe" else a for a in argv]
            argv = [release.namespace if a == "kubescribe-system" else a for a in argv]
        if "crds/" in line:
            argv = [str(ROOT / a) if a.startswith("charts/") else a for a in argv]
            argv.append("--dry-run=server")
        steps.append(argv)
    assert [step[:2] for step in steps] == [
        ["kubectl", "delete"],
        ["helm", "uninstall"],
        ["kubectl", "delete"],
    ]
    return steps


def test_documented_uninstall_leaves_nothing_stuck(
    cluster: Cluster, release: Release, models_namespace: str, tmp_path: Path
) -> None:
    release.install()
    operator = release.operator(tmp_path)
    operator.start()
    try:
        cluster.apply(demo_model(models_namespace))
        eventually(
            lambda: (
                OPERATOR_FINALIZER
                in (
                    (get_json(cluster, PLURAL, "demo", "-n", models_namespace) or {})
                    .get("metadata", {})
                    .get("finalizers")
                    or []
                )
            ),
            "the operator to take the SpeechModel (its finalizer)",
        )
        eventually(
            lambda: get_json(cluster, "deployment", "demo", "-n", models_namespace),
            "the model's Deployment",
        )
        for step in uninstall_steps(release, models_namespace):
            if step[0] == "helm":
                operator.stop()  # the chart's Deployment goes with the release
                out = cluster.helm(*step[1:], check=False)
            else:
                out = cluster.kubectl(*step[1:], check=False)
            assert out.returncode == 0, f"{step}: {out.stderr}"
    finally:
        operator.kill()
    assert get_json(cluster, PLURAL, "demo", "-n", models_namespace) is None
    # Nothing holds the namespace: it goes away entirely.
    cluster.kubectl("delete", "namespace", models_namespace, "--wait=false")
    eventually(
        lambda: get_json(cluster, "namespace", models_namespace) is None,
        "the models' namespace to be deleted",
        timeout=180,
    )


def test_uninstalling_the_operator_first_leaves_the_models_stuck(
    cluster: Cluster, release: Release, models_namespace: str, tmp_path: Path
) -> None:
    # The order the docs forbid, to show what it does: nothing removes the operator's finalizer,
    # and the namespace controller reports it holds the namespace.
    release.install()
    operator = release.operator(tmp_path)
    operator.start()
    try:
        cluster.apply(demo_model(models_namespace))
        eventually(
            lambda: (
                OPERATOR_FINALIZER
                in (
                    (get_json(cluster, PLURAL, "demo", "-n", models_namespace) or {})
                    .get("metadata", {})
                    .get("finalizers")
                    or []
                )
            ),
            "the operator to take the SpeechModel (its finalizer)",
        )
    finally:
        operator.stop()
    release.uninstall()
    cluster.kubectl("delete", "namespace", models_namespace, "--wait=false")

    def stuck() -> bool:
        ns = get_json(cluster, "namespace", models_namespace) or {}
        conditions = {c["type"]: c for c in ns.get("status", {}).get("conditions", [])}
        remaining = conditions.get("NamespaceFinalizersRemaining", {})
        message = remaining.get("message", "")
        return remaining.get("status") == "True" and OPERATOR_FINALIZER in message

    eventually(stuck, "the namespace controller to report the operator's finalizer")
    model = get_json(cluster, PLURAL, "demo", "-n", models_namespace)
    assert model is not None and "deletionTimestamp" in model["metadata"]
    assert model["metadata"]["finalizers"] == [OPERATOR_FINALIZER]

    # Issue 22.7: the user guide's recovery for this order, run as written (the test's
    # namespace for --all-namespaces): the models go, and with them the namespace.
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    block = re.search(r"<!-- doc-test: release-stuck-models -->\n```sh\n(.*?)```", guide, re.DOTALL)
    assert block, "docs/user-guide.md lost its recovery block"
    script = block.group(1).replace("--all-namespaces", f"--namespace={models_namespace}")
    env = {**os.environ, "PATH": f"{cluster.bin}:{os.environ['PATH']}"}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, env=env,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "patched" in out.stdout, (out.stdout, out.stderr)
    eventually(
        lambda: get_json(cluster, "namespace", models_namespace) is None,
        "the models' namespace to be deleted after the recovery",
        timeout=180,
    )


def test_deleting_the_chart_crds_leaves_kopf_peering_alone(cluster: Cluster) -> None:
    # Issue 22.7: the documented `kubectl delete -f charts/kubescribe/crds/` (server dry run:
    # other tests use the CRDs) deletes the SpeechModel CRD and nothing other kopf operators
    # share; the cluster has kopf's CRDs all the same (installed from the subchart).
    out = cluster.kubectl("delete", "-f", str(CHART / "crds"), "--dry-run=server", "-o", "name")
    assert out.stdout.split() == [
        "customresourcedefinition.apiextensions.k8s.io/speechmodels.kubescribe.io"
    ]
    for crd in ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert get_json(cluster, "crd", crd) is not None


# ------------------------------------------------------------------ the GitOps example syncs


def test_the_gitops_directory_becomes_healthy(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    # What the example `speechmodels` Application syncs (recursively), applied as Argo CD would
    # (cluster-scoped prerequisites first), into this test's namespace: every SpeechModel ends
    # Healthy by the example health check, with nothing else to create by hand.
    from test_argocd_health import health
    from test_examples import applications, argocd_directory

    source = applications()["speechmodels"]["spec"]["source"]
    objects = [
        doc
        for path in argocd_directory(source)
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    models = [obj for obj in objects if obj["kind"] == "SpeechModel"]
    prerequisites = [obj for obj in objects if obj["kind"] != "SpeechModel"]
    assert models and prerequisites
    try:
        for obj in prerequisites:
            assert "namespace" not in obj["metadata"], "namespaced prerequisites: not modelled"
            cluster.apply(obj)
        for obj in models:
            cluster.apply({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})

        def healthy(name: str) -> tuple[str, str] | None:
            live = get_json(cluster, PLURAL, name, "-n", namespace)
            verdict = health(live) if live else None
            return verdict if verdict and verdict[0] == "Healthy" else None

        for obj in models:
            name = obj["metadata"]["name"]
            eventually(lambda name=name: healthy(name), f"{name} to be Healthy", timeout=180)
    finally:
        cluster.kubectl("delete", PLURAL, "--all", "-n", namespace, "--timeout=120s", check=False)
        for obj in prerequisites:
            cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
