"""The chart grants the operator exactly the API calls it makes, and runs it as it expects.

`kubescribe_operator.apply.API_USAGE` is the operator's own list of (group, resource) -> verbs;
the rendered ClusterRole/Roles must grant that and nothing else, scoped as tightly as the
watched namespaces allow. The rendered arguments are parsed by the operator's real parser, and
the peering objects match the peering name it is given.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubescribe_operator import builders
from kubescribe_operator.apply import API_USAGE
from kubescribe_operator.process import build_parser
from pkg_helpers import NAMESPACE, RELEASE, by_kind, one, render_chart

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)

CLUSTER_SCOPED = {
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
}
CLUSTER_PEERING = ("kopf.dev", "clusterkopfpeerings")
NAMESPACED_PEERING = ("kopf.dev", "kopfpeerings")
WATCHED = ["speech", "speech-staging"]


def grants(rules: list[dict[str, Any]]) -> set[Grant]:
    result = set()
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    result.add((group, resource, verb))
    return result


def usage(*, exclude: set[tuple[str, str]], only: set[tuple[str, str]] | None = None) -> set[Grant]:
    return {
        (group, resource, verb)
        for (group, resource), verbs in API_USAGE.items()
        if (group, resource) not in exclude and (only is None or (group, resource) in only)
        for verb in verbs
    }


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    args: list[str] = container["args"]
    assert args[0] == "operator"
    return args[1:]


def test_all_namespaces_cluster_role_is_exactly_the_api_usage() -> None:
    objects = render_chart()[0]
    role = one(objects, "ClusterRole")
    assert grants(role["rules"]) == usage(exclude={NAMESPACED_PEERING})
    assert by_kind(objects, "Role") == [] and by_kind(objects, "RoleBinding") == []


def test_watched_namespaces_get_roles_and_nothing_namespaced_cluster_wide() -> None:
    objects = render_chart({"watchNamespaces": WATCHED})[0]
    cluster = one(objects, "ClusterRole")
    assert grants(cluster["rules"]) == usage(
        exclude={CLUSTER_PEERING, NAMESPACED_PEERING}, only=CLUSTER_SCOPED
    )
    roles = by_kind(objects, "Role")
    assert sorted(role["metadata"]["namespace"] for role in roles) == WATCHED
    for role in roles:
        assert grants(role["rules"]) == usage(exclude=CLUSTER_SCOPED)
    bindings = by_kind(objects, "RoleBinding")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == WATCHED


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": WATCHED}], ids=["all", "watched"])
def test_bindings_bind_the_operator_service_account(values: dict[str, Any]) -> None:
    objects = render_chart(values)[0]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    roles = {(role["kind"], role["metadata"]["name"]) for role in by_kind(objects, "Role")}
    roles |= {(role["kind"], role["metadata"]["name"]) for role in by_kind(objects, "ClusterRole")}
    for binding in by_kind(objects, "ClusterRoleBinding") + by_kind(objects, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles


def test_rbac_off_renders_no_rbac() -> None:
    objects = render_chart({"rbac": {"create": False}})[0]
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert by_kind(objects, kind) == []


def test_rendered_arguments_parse_with_the_operator_parser() -> None:
    parser = build_parser()
    everywhere = parser.parse_args(operator_args(render_chart()[0]))
    assert everywhere.all_namespaces and everywhere.namespace == []
    assert (everywhere.liveness_port, everywhere.metrics_port) == (8080, 9090)
    assert everywhere.log_format == "json" and not everywhere.standalone
    scoped = parser.parse_args(
        operator_args(render_chart({"watchNamespaces": WATCHED, "verbose": True})[0])
    )
    assert scoped.namespace == WATCHED and not scoped.all_namespaces and scoped.verbose
    silent = parser.parse_args(operator_args(render_chart({"metrics": {"enabled": False}})[0]))
    assert silent.metrics_port == 0


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": WATCHED}], ids=["all", "watched"])
def test_peering_objects_match_the_peering_the_operator_joins(values: dict[str, Any]) -> None:
    objects = render_chart({**values, "peering": {"name": "speech-ops"}})[0]
    args = build_parser().parse_args(operator_args(objects))
    assert args.peering == "speech-ops"
    if values:
        peerings = by_kind(objects, "KopfPeering")
        assert sorted(p["metadata"]["namespace"] for p in peerings) == WATCHED
        assert by_kind(objects, "ClusterKopfPeering") == []
    else:
        peerings = [one(objects, "ClusterKopfPeering")]
        assert by_kind(objects, "KopfPeering") == []
    assert {p["metadata"]["name"] for p in peerings} == {"speech-ops"}


def test_peering_identity_is_the_pod_name() -> None:
    container = one(render_chart()[0], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    # kopf names each peer by $POD_ID (kopf._core.engines.peering.detect_own_id).
    assert env["POD_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_runtime_services_never_select_the_operator_pods() -> None:
    # A SpeechModel named like the release, in the operator's namespace: its Service selects
    # builders.selector_labels(name); the operator's pods must not match.
    pod_labels = one(render_chart()[0], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not builders.selector_labels(RELEASE).items() <= pod_labels.items()
    # Nor do the operator's own child-event handlers (they select name=kubescribe) see them.
    assert pod_labels[builders.LABEL_NAME] != builders.selector_labels(RELEASE)[builders.LABEL_NAME]
