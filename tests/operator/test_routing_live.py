"""Routing on the real control plane (issue 19.1): the operator renders and owns a routed
SpeechModel's HTTPRoute by server-side apply, idempotently, and reports what the Gateways say
of it in a `Routed` condition; without Gateway API's CRDs, or with a parentRef to a Gateway
that does not exist, the model serves (Ready) and the condition says why. KWOK pods suffice:
nothing here sends traffic (tests/operator/test_gateways_live.py does, through real gateways).

The test plays the Gateway's controller itself: it writes the route's status.parents[] as a
controller would, and reads the verdict back on the SpeechModel.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import gateway_api  # cluster/gateway_api.py
import kubernetes
import pytest
from kube_cluster import ROOT, Cluster, OperatorProcess, eventually  # noqa: F401  (cluster/ on the path)
from kubescribe_operator.httproute import build_for
from kubescribe_operator.spec import SpeechModelSpec
from live import Models, condition, is_ready, manifest, operator_writes, wait_resyncs

pytestmark = pytest.mark.timeout(300)

GROUP = gateway_api.GROUP
HTTPROUTES_CRD = f"httproutes.{GROUP}"
CONTROLLER = "kubescribe.io/test-controller"
ROUTING = {
    "parentRefs": [{"name": "speech"}],
    "names": ["support-es"],
    "defaultForLanguages": ["es"],
}
Obj = dict[str, Any]


def install_gateway_api(cluster: Cluster) -> None:
    gateway_api.install(lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout)


@pytest.fixture()
def without_gateway_api(cluster: Cluster) -> Iterator[Callable[[], None]]:
    """No HTTPRoute CRD when the operator starts; calling the fixture installs Gateway API's
    standard CRDs (cluster-wide, so they are put back afterwards in any case)."""
    cluster.kubectl("delete", "crd", HTTPROUTES_CRD, "--ignore-not-found", "--wait=true")
    yield lambda: install_gateway_api(cluster)
    install_gateway_api(cluster)


@pytest.fixture()
def with_gateway_api(cluster: Cluster) -> None:
    install_gateway_api(cluster)


class Routes:
    def __init__(self, models: Models) -> None:
        self.models = models
        self.api = kubernetes.client.CustomObjectsApi(models.client)

    def get(self, name: str = "demo") -> Obj | None:
        try:
            found = self.api.get_namespaced_custom_object(
                GROUP, "v1", self.models.ns, "httproutes", name
            )
            return dict(found)  # type: ignore[call-overload]
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def report(self, name: str, *conditions: tuple[str, str, str]) -> None:
        """Write the route's status as a Gateway controller does (status subresource)."""
        parent = {
            "parentRef": {"group": GROUP, "kind": "Gateway", "name": "speech"},
            "controllerName": CONTROLLER,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": f"the test's controller: {t} {r}",
                    "lastTransitionTime": "2026-12-07T06:00:00Z",
                    "observedGeneration": 1,
                }
                for t, s, r in conditions
            ],
        }
        self.api.patch_namespaced_custom_object_status(
            GROUP, "v1", self.models.ns, "httproutes", name, {"status": {"parents": [parent]}}
        )

    def gateway(self) -> None:
        self.api.create_namespaced_custom_object(
            GROUP, "v1", self.models.ns, "gateways",
            gateway_api.gateway("speech", self.models.ns, "kubescribe-test", 80),
        )  # fmt: skip


def routed(reason: str, status: str) -> Callable[[Obj], bool]:
    def check(s: Obj) -> bool:
        c = condition(s, "Routed")
        return is_ready("1.0")(s) and (c.get("reason"), c.get("status")) == (reason, status)

    return check


def test_without_gateway_api_the_model_serves_and_says_why(
    cluster: Cluster,
    namespace: str,
    without_gateway_api: Callable[[], None],
    live_operator: OperatorProcess,
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest(replicas=1, routing=ROUTING))
    status = models.wait_status(routed("GatewayAPIMissing", "False"), "Ready, not routed")
    assert "install Gateway API's CRDs" in condition(status, "Routed")["message"]
    assert condition(status, "OptionalChildrenApplied") == {}  # not the monitoring warning
    assert condition(status, "Stalled")["status"] == "False"
    models.wait_events(lambda r: "NotRouted" in r, "the Warning event")
    # The CRDs installed: the route follows (after the refusal's back-off), and a parentRef
    # to a Gateway that does not exist is named.
    without_gateway_api()
    routes = Routes(models)
    eventually(lambda: routes.get(), "the HTTPRoute once the CRD is there", timeout=120)
    status = models.wait_status(routed("GatewayNotFound", "False"), "Gateway speech missing")
    assert f"Gateway {namespace}/speech does not exist" in condition(status, "Routed")["message"]


def test_the_route_is_rendered_owned_idempotent_and_reports_the_gateways_verdict(
    cluster: Cluster, namespace: str, with_gateway_api: None, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    routes = Routes(models)
    routes.gateway()  # exists; no controller reports on it (the test is the controller)
    created = models.create(manifest(replicas=1, routing=ROUTING))
    status = models.wait_status(routed("NotYetAccepted", "False"), "a route nobody reports on")
    route = routes.get()
    assert route is not None
    meta = route["metadata"]
    assert meta["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert meta["labels"]["app.kubernetes.io/instance"] == "demo"
    assert {m["manager"] for m in meta["managedFields"] if m["operation"] == "Apply"} == {
        "kubescribe-operator"
    }
    names = {
        m["headers"][0]["value"]
        for m in route["spec"]["rules"][0]["matches"]
        if m.get("headers", [{}])[0].get("name") == "x-kubescribe-model"
    }
    assert names == {"demo", "support-es"}
    # The pods answer for those names, and list the namespace's catalogue.
    deployment = models.deployment()
    assert deployment is not None
    pod_env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert pod_env["KUBESCRIBE_SERVED_MODEL_NAMES"] == "demo,support-es"
    catalogue = models.core.read_namespaced_config_map("kubescribe-models", namespace)
    assert json.loads(catalogue.data["demo.json"]) == {
        "name": "demo", "names": ["support-es"], "version": "1.0", "defaultForLanguages": ["es"],
    }  # fmt: skip

    # The Gateway's verdict, with its reason and message.
    routes.report(
        "demo", ("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")
    )
    models.wait_status(routed("Accepted", "True"), "Routed once the gateway accepts")
    routes.report(
        "demo",
        ("Accepted", "False", "NotAllowedByListeners"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )
    status = models.wait_status(routed("NotAllowedByListeners", "False"), "the gateway's refusal")
    assert (
        "the test's controller: Accepted NotAllowedByListeners"
        in condition(status, "Routed")["message"]
    )

    # The largest route the spec allows passes the CRD's CEL rules at the API server too.
    largest = SpeechModelSpec.model_validate(
        {
            "model": {"uri": "s3://models/demo/1.0", "version": "1.0"},
            "routing": {
                "parentRefs": [{"name": "speech"}],
                "names": [f"alias-{i}" for i in range(14)],
                "defaultForLanguages": [f"l{chr(97 + i)}" for i in range(16)],
            },
        }
    )
    body = build_for("largest", namespace, created["metadata"]["uid"], largest)
    assert body is not None and len(body["spec"]["rules"]) == 16
    routes.api.create_namespaced_custom_object(
        GROUP, "v1", namespace, "httproutes", body, dry_run="All"
    )

    # Idempotent: resyncs with nothing changed write nothing, the route included.
    since = cluster.audit_offset()
    wait_resyncs(live_operator, 4)
    assert operator_writes(cluster, since, namespace) == []

    # Routing removed: the route and the catalogue entry go, and so does the condition.
    models.patch_spec("demo", {"routing": None})
    eventually(lambda: routes.get() is None, "the HTTPRoute deleted")
    models.wait_status(lambda s: condition(s, "Routed") == {}, "no Routed condition")
    eventually(
        lambda: (
            "demo.json"
            not in (
                models.core.read_namespaced_config_map("kubescribe-models", namespace).data or {}
            )
        ),
        "the catalogue entry taken away",
    )
