"""The operator's routing edge without an API: the HTTPRoute among the children, the runtime's
names and catalogue in the pod, the `Routed` condition (GatewayAPIMissing, GatewayNotFound, the
Gateway's verdict), and the catalogue entry applied only when it changes (issue 19.1)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubescribe_operator import apply, builders, catalog, routing
from kubescribe_operator.cache import Snapshot
from kubescribe_operator.spec import SpeechModelSpec
from kubescribe_operator.status import SpeechModelStatus

UID = "3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"
NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
Obj = dict[str, Any]


def spec(routed: bool = True, **routing_: Any) -> SpeechModelSpec:
    body: Obj = {"model": {"uri": "s3://bucket/m", "version": "1.0.0"}}
    if routed:
        body["routing"] = {"parentRefs": [{"name": "speech"}], **routing_}
    return SpeechModelSpec.model_validate(body)


def children(s: SpeechModelSpec) -> dict[str, Obj]:
    built = builders.build_children("demo-es", "speech", UID, s, s.model.ref())
    return {obj["kind"]: obj for obj in built}


def runtime(s: SpeechModelSpec) -> Obj:
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "runtime")


def env(c: Obj) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c["env"]}


# ---------------------------------------------------------------------------- rendering


def test_a_routed_model_has_its_httproute_and_an_unrouted_one_none() -> None:
    assert children(spec(names=["support-es"]))["HTTPRoute"]["metadata"]["name"] == "demo-es"
    assert "HTTPRoute" not in children(spec(routed=False))


def test_the_runtime_answers_for_the_models_names_and_mounts_the_catalogue() -> None:
    c = runtime(spec(names=["support-es"]))
    assert env(c)["KUBESCRIBE_SERVED_MODEL_NAMES"] == "demo-es,support-es"
    assert env(c)["KUBESCRIBE_MODEL_CATALOG"] == catalog.MOUNT_DIR
    assert {"name": "model-catalog", "mountPath": catalog.MOUNT_DIR, "readOnly": True} in c[
        "volumeMounts"
    ]
    pod = children(spec())["Deployment"]["spec"]["template"]["spec"]
    # Optional: a pod starts before the first catalogue entry is written.
    assert {
        "name": "model-catalog",
        "configMap": {"name": "kubescribe-models", "optional": True},
    } in pod["volumes"]


def test_an_unrouted_runtime_answers_for_any_name_as_before() -> None:
    c = runtime(spec(routed=False))
    assert not {"KUBESCRIBE_SERVED_MODEL_NAMES", "KUBESCRIBE_MODEL_CATALOG"} & set(env(c))
    assert all(m["name"] != "model-catalog" for m in c["volumeMounts"])


def test_the_names_are_the_operators_not_the_users() -> None:
    with pytest.raises(ValueError, match="KUBESCRIBE_SERVED_MODEL_NAMES"):
        SpeechModelSpec.model_validate(
            {
                "model": {"uri": "s3://bucket/m", "version": "1"},
                "runtime": {"env": [{"name": "KUBESCRIBE_SERVED_MODEL_NAMES", "value": "x"}]},
            }
        )


def test_the_catalogue_entry_is_the_models_own() -> None:
    s = spec(names=["support-es"], defaultForLanguages=["es"])
    body = catalog.build_entry("demo-es", "speech", UID, catalog.entry("demo-es", s))
    assert body["metadata"]["name"] == "kubescribe-models"
    assert "app.kubernetes.io/instance" not in body["metadata"]["labels"]  # no one model's child
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["uid"], owner["controller"]) == (UID, False)
    assert json.loads(body["data"]["demo-es.json"]) == {
        "name": "demo-es",
        "names": ["support-es"],
        "version": "1.0.0",
        "defaultForLanguages": ["es"],
    }
    # Not routed: the ownerReference alone (removing it needs delete on the ConfigMap where
    # OwnerReferencesPermissionEnforcement is on; the live test's RBAC check saw the 403).
    empty = catalog.build_entry("demo-es", "speech", UID, None)
    assert "data" not in empty and empty["metadata"]["ownerReferences"] == [owner]
    assert catalog.field_manager("demo-es") == "kubescribe-operator/catalog/demo-es"


# ------------------------------------------------------------------------- the edge


class FakeKube:
    def __init__(self, gateways: dict[str, int] | None = None) -> None:
        self.gateways = gateways or {}  # name -> status of a GET (200, 403, 404)
        self.requests: list[tuple[str, str, str]] = []

    def get(self, path: str) -> Obj:
        self.requests.append(("get", path, ""))
        code = self.gateways.get(path.rsplit("/", 1)[-1], 404)
        if code != 200:
            raise ApiException(status=code, reason="x")
        return {}

    def apply(self, path: str, body: Obj, *, manager: str = "", new: bool = False) -> Obj:
        self.requests.append(("apply", path, manager))
        return body


def snap(*objs: Obj) -> Snapshot:
    by_kind: dict[str, list[Obj]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    return Snapshot("speech", "demo-es", None, by_kind)


def route(*parents: Obj) -> Obj:
    built = children(spec())["HTTPRoute"]
    return {**built, "status": {"parents": list(parents)}}


def accepted(name: str) -> Obj:
    return {
        "parentRef": {"name": name},
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs"},
        ],
    }


NOT_SERVED = "cannot apply HTTPRoute speech/demo-es: the cluster does not serve gateway..."
CASES = {
    "Gateway API missing": ({"HTTPRoute": NOT_SERVED}, (), {}, False, "GatewayAPIMissing", 0),
    "refused by the API server": (
        {"HTTPRoute": "the API server refused HTTPRoute"},
        (),
        {},
        False,
        "RouteRefused",
        0,
    ),
    "the Gateway does not exist": ({}, (route(),), {"speech": 404}, False, "GatewayNotFound", 1),
    "the Gateway exists, no controller reports": (
        {},
        (route(),),
        {"speech": 200},
        False,
        "NotYetAccepted",
        1,
    ),
    "not allowed to read the Gateway": ({}, (), {"speech": 403}, False, "NotYetAccepted", 1),
    "accepted: no lookup": ({}, (route(accepted("speech")),), {}, True, "Accepted", 0),
}


@pytest.mark.parametrize(
    "skipped, objs, gateways, routed, reason, lookups", CASES.values(), ids=CASES.keys()
)
def test_the_routed_verdict(
    skipped: dict[str, str],
    objs: tuple[Obj, ...],
    gateways: dict[str, int],
    routed: bool,
    reason: str,
    lookups: int,
) -> None:
    kube, memory = FakeKube(gateways), routing.RoutingMemory()
    verdict, requests = routing.health(kube, memory, snap(*objs), UID, spec(), skipped)  # type: ignore[arg-type]
    assert verdict is not None
    assert (verdict.routed, verdict.reason, requests) == (routed, reason, lookups)
    # A second reconcile within the minute asks nothing more.
    again = routing.health(kube, memory, snap(*objs), UID, spec(), skipped)  # type: ignore[arg-type]
    assert again == (verdict, 0)


def test_no_routing_no_verdict_and_no_condition() -> None:
    kube = FakeKube()
    assert routing.health(kube, routing.RoutingMemory(), snap(), UID, spec(False), {}) == (None, 0)  # type: ignore[arg-type]
    prev = SpeechModelStatus.model_validate(
        {"conditions": [{"type": "Routed", "status": "True", "reason": "Accepted",
                         "lastTransitionTime": "2026-12-07T05:00:00Z"}]}
    )  # fmt: skip
    status, events = routing.with_routed_condition(prev.dump(), prev, None, NOW)
    assert status["conditions"] == [] and events == ()


def test_the_condition_warns_once_when_it_turns_false_and_leaves_ready() -> None:
    base = {
        "phase": "Ready",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Ready",
             "lastTransitionTime": "2026-12-07T05:00:00Z"},
        ],
    }  # fmt: skip
    missing = routing.httproute.RouteHealth(
        False, "GatewayNotFound", "Gateway speech/x does not exist"
    )
    status, events = routing.with_routed_condition(base, None, missing, NOW)
    assert [(e.type, e.reason) for e in events] == [("Warning", "NotRouted")]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and status["phase"] == "Ready"
    assert (conditions["Routed"]["status"], conditions["Routed"]["reason"]) == (
        "False",
        "GatewayNotFound",
    )
    prev = SpeechModelStatus.model_validate(status)
    _, again = routing.with_routed_condition(status, prev, missing, NOW)
    assert again == ()


def test_the_catalogue_entry_is_applied_when_it_changes_and_taken_away() -> None:
    kube, memory = FakeKube(), routing.RoutingMemory()
    routed = spec(names=["support-es"])
    assert routing.sync_catalog(kube, memory, snap(), UID, routed) == 1  # type: ignore[arg-type]
    assert kube.requests == [
        (
            "apply",
            "/api/v1/namespaces/speech/configmaps/kubescribe-models",
            "kubescribe-operator/catalog/demo-es",
        )
    ]
    assert routing.sync_catalog(kube, memory, snap(), UID, routed) == 0  # type: ignore[arg-type]
    # Routing removed: its entry goes (an apply of nothing under its manager), once.
    assert routing.sync_catalog(kube, memory, snap(), UID, spec(False)) == 1  # type: ignore[arg-type]
    assert routing.sync_catalog(kube, memory, snap(), UID, spec(False)) == 0  # type: ignore[arg-type]


def test_a_refused_catalogue_entry_does_not_stop_the_reconcile() -> None:
    class Forbidden(FakeKube):
        def apply(self, path: str, body: Obj, *, manager: str = "", new: bool = False) -> Obj:
            super().apply(path, body, manager=manager)
            raise ApiException(status=403, reason="Forbidden")

    kube, memory = Forbidden(), routing.RoutingMemory()
    assert routing.sync_catalog(kube, memory, snap(), UID, spec()) == 1  # type: ignore[arg-type]
    assert routing.sync_catalog(kube, memory, snap(), UID, spec()) == 0  # type: ignore[arg-type]


def test_a_deleted_models_entry_is_patched_away_never_created() -> None:
    class Recording(FakeKube):
        def request(self, method: str, path: str, **kw: Any) -> Obj:
            self.requests.append((method, path, json.dumps(kw, sort_keys=True)))
            raise ApiException(status=404, reason="Not Found")  # gone with its namespace

    kube = Recording()
    routing.forget(kube, "speech", "demo-es", {"routing": {"parentRefs": [{"name": "gw"}]}})  # type: ignore[arg-type]
    routing.forget(kube, "speech", "demo", {})  # type: ignore[arg-type]
    ((method, path, kw),) = kube.requests
    assert (method, path) == ("PATCH", "/api/v1/namespaces/speech/configmaps/kubescribe-models")
    assert json.loads(kw)["body"] == {"data": {"demo-es.json": None}}
    assert json.loads(kw)["content_type"] == "application/merge-patch+json"


def test_a_model_never_routed_writes_no_catalogue() -> None:
    kube = FakeKube()
    assert routing.sync_catalog(kube, routing.RoutingMemory(), snap(), UID, spec(False)) == 0  # type: ignore[arg-type]
    # After an operator restart its HTTPRoute still shows it was routed: the entry goes.
    restarted = routing.RoutingMemory()
    assert routing.sync_catalog(kube, restarted, snap(route()), UID, spec(False)) == 1  # type: ignore[arg-type]


def test_the_route_is_optional_and_its_absence_is_not_a_monitoring_warning() -> None:
    """apply: a missing HTTPRoute kind is skipped (the model is applied) and named by kind."""
    missing = ApiException(status=404, reason="Not Found")

    class Refusing(FakeKube):
        def apply(self, path: str, body: Obj, *, manager: str = "", new: bool = False) -> Obj:
            if body["kind"] == "HTTPRoute":
                raise missing
            return {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}

    built = list(children(spec()).values())
    result = apply.apply_children(Refusing(), apply.Memory(), snap(), UID, built)  # type: ignore[arg-type]
    assert set(result.skipped_kinds) == {"HTTPRoute"}
    assert "does not serve" in result.skipped_kinds["HTTPRoute"]
    assert {identity[1] for identity in result.created} == {"Service", "Deployment"}
