"""apply.py: server-side apply of the children, and no request when a child is intact.

A fake API stands in for the server: it records every request and answers an apply the way the
API server does (the object, with the manager's field set under ``managedFields``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubescribe_operator import apply
from kubescribe_operator.api import ModelRef
from kubescribe_operator.builders import build_children
from kubescribe_operator.cache import Snapshot
from kubescribe_operator.spec import SpeechModelSpec

UID = "0000-1111"
NS = "speech"
Obj = dict[str, Any]


def children(**spec: Any) -> list[Obj]:
    model = {"uri": "s3://models/demo/1.0", "version": "1.0"}
    parsed = SpeechModelSpec.model_validate({"model": model, **spec})
    return build_children("demo", NS, UID, parsed, ModelRef(uri=model["uri"], version="1.0"))


def field_set(obj: Obj) -> Obj:
    """A stand-in for the server's fieldsV1: the applied object's keys, recursively."""
    if isinstance(obj, dict):
        return {f"f:{k}": field_set(v) for k, v in obj.items()}
    return {}


def with_fields(obj: Obj, manager: str = apply.FIELD_MANAGER, *, rv: str = "1") -> Obj:
    live = copy.deepcopy(obj)
    fields = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    live["metadata"] = {
        **live["metadata"],
        "uid": f"uid-{obj['metadata']['name']}",
        "resourceVersion": rv,
        "managedFields": [
            {"manager": manager, "operation": "Apply", "fieldsV1": field_set(fields)}
        ],
    }
    return live


class FakeKube:
    """Records requests; answers applies as the API server would."""

    def __init__(
        self,
        refuse: dict[str, ApiException] | None = None,
        existing: dict[str, Obj] | None = None,
    ) -> None:
        self.requests: list[tuple[str, str, str]] = []  # (verb, kind, manager)
        self.refuse = refuse or {}
        self.existing = existing or {}  # kind -> an object the watch cache does not show
        self.rv = 100

    def get(self, path: str) -> Obj:
        kind = next((k for k, o in self.existing.items() if path.endswith(_plural(k))), None)
        self.requests.append(("get", kind or "?", ""))
        if kind is None:
            raise ApiException(status=404, reason="Not Found")
        return self.existing[kind]

    def apply(
        self, path: str, body: Obj, *, manager: str = apply.FIELD_MANAGER, new: bool = False
    ) -> Obj:
        self.requests.append(("apply", body["kind"], manager))
        if body["kind"] in self.refuse:
            raise self.refuse[body["kind"]]
        if new and body["kind"] in self.existing:  # the dry-run create finds the name taken
            raise ApiException(status=409, reason="Conflict")
        self.rv += 1
        return with_fields(body, manager, rv=str(self.rv))

    def delete(self, path: str, uid: str | None = None) -> None:
        self.requests.append(("delete", path.rsplit("/", 2)[-2], ""))


def _plural(kind: str) -> str:
    return f"/{kind.lower()}s/demo"


def snap(*objs: Obj) -> Snapshot:
    by_kind: dict[str, list[Obj]] = {}
    for obj in objs:
        by_kind.setdefault(obj["kind"], []).append(obj)
    return Snapshot(NS, "demo", None, by_kind)


def run(kube: FakeKube, memory: apply.Memory, live: list[Obj], desired: list[Obj]) -> Any:
    return apply.apply_children(kube, memory, snap(*live), UID, desired)  # type: ignore[arg-type]


def converge(desired: list[Obj]) -> tuple[FakeKube, apply.Memory, list[Obj]]:
    """Apply once from nothing; returns the objects as the watch cache then shows them."""
    kube, memory = FakeKube(), apply.Memory()
    run(kube, memory, [], desired)
    live = [with_fields(d, rv=str(101 + i)) for i, d in enumerate(desired)]
    return kube, memory, live


def test_first_reconcile_applies_every_child_under_the_operators_field_manager() -> None:
    desired = children(replicas=2)
    kube, _, _ = converge(desired)
    assert kube.requests == [
        ("apply", "Service", apply.FIELD_MANAGER),
        ("apply", "Deployment", apply.FIELD_MANAGER),
        ("apply", "PodDisruptionBudget", apply.FIELD_MANAGER),
    ]


def test_an_intact_child_gets_no_request() -> None:
    desired = children(replicas=2)
    kube, memory, live = converge(desired)
    kube.requests.clear()
    result = run(kube, memory, live, desired)
    assert kube.requests == [] and result.requests == 0


def test_values_the_server_normalises_or_prunes_cause_no_request() -> None:
    """Defect 2.4: the field set is compared, not the values ("1000m" stored as "1")."""
    desired = children(replicas=2)
    kube, memory, live = converge(desired)
    deployment = next(o for o in live if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    pod["containers"][0]["resources"]["requests"]["cpu"] = "1000m"
    pod["terminationGracePeriodSeconds"] = 30  # a default the server filled in
    deployment["status"] = {"replicas": 2}
    kube.requests.clear()
    run(kube, memory, live, desired)
    assert kube.requests == []


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("the spec changed", lambda desired, live: desired[1]["spec"].update(replicas=3)),
        (
            "another manager took a field",
            lambda desired, live: live[1]["metadata"]["managedFields"][0]["fieldsV1"].pop("f:spec"),
        ),
        ("the child was deleted", lambda desired, live: live.pop(1)),
    ],
)
def test_a_changed_child_is_applied_again(what: str, change: Any) -> None:
    desired = children(replicas=2)
    kube, memory, live = converge(desired)
    change(desired, live)
    kube.requests.clear()
    run(kube, memory, live, desired)
    assert kube.requests == [("apply", "Deployment", apply.FIELD_MANAGER)], what


def test_after_a_restart_each_child_is_applied_once() -> None:
    desired = children(replicas=2)
    _, _, live = converge(desired)
    kube, memory = FakeKube(), apply.Memory()  # a new process: nothing remembered
    run(kube, memory, live, desired)
    assert len(kube.requests) == len(desired)
    kube.requests.clear()
    run(kube, memory, [with_fields(d) for d in desired], desired)
    assert kube.requests == []


def test_autoscaling_on_hands_replicas_over_before_dropping_them() -> None:
    _, memory, live = converge(children(replicas=3))
    scaled = children(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    deployment = next(o for o in scaled if o["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]  # the operator never owns it with an HPA
    kube = FakeKube()
    run(kube, memory, live, scaled)
    assert kube.requests[:2] == [
        ("apply", "Deployment", apply.HANDOVER_MANAGER),
        ("apply", "Deployment", apply.FIELD_MANAGER),
    ]
    given = apply.handover(deployment, next(o for o in live if o["kind"] == "Deployment"))
    assert given is not None and given["spec"] == {"replicas": 3}


def test_no_handover_when_the_operator_does_not_own_replicas() -> None:
    scaled = children(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    deployment = next(o for o in scaled if o["kind"] == "Deployment")
    live = with_fields(deployment)
    live["spec"]["replicas"] = 4  # set by the HPA
    assert apply.handover(deployment, live) is None


def test_children_no_longer_wanted_are_deleted_and_foreign_ones_kept() -> None:
    _, memory, live = converge(children(replicas=2))
    foreign = with_fields(children(replicas=2)[2])  # a PDB of someone else
    foreign["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    kube = FakeKube()
    result = run(kube, memory, live, children(replicas=1))
    assert kube.requests == [
        ("apply", "Deployment", apply.FIELD_MANAGER),  # replicas: 1
        ("delete", "poddisruptionbudgets", ""),
    ]
    assert result.deleted == [("policy/v1", "PodDisruptionBudget", "demo")]
    kube.requests.clear()
    run(kube, memory, [foreign], [])
    assert kube.requests == []


def test_a_child_owned_by_someone_else_is_a_conflict() -> None:
    desired = children(replicas=1)
    service = with_fields(desired[0])
    service["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    with pytest.raises(apply.ChildConflict, match="no ownerReference to SpeechModel demo"):
        run(FakeKube(), apply.Memory(), [service], desired)


def test_a_name_taken_by_an_object_the_cache_does_not_show_is_a_conflict() -> None:
    """The watch cache sees only labelled children; the dry-run create before the first apply
    answers 409 when someone else's object has the name (apply would take it over)."""
    desired = children(replicas=1)
    theirs = with_fields(desired[0])
    theirs["metadata"]["ownerReferences"] = [{"uid": "someone-else"}]
    kube = FakeKube(existing={"Service": theirs})
    with pytest.raises(apply.ChildConflict, match="no ownerReference to SpeechModel demo"):
        run(kube, apply.Memory(), [], desired)
    assert kube.requests == [("apply", "Service", apply.FIELD_MANAGER), ("get", "Service", "")]


def test_a_relabelled_child_still_owned_by_reference_is_adopted() -> None:
    """Finding 22.9: ownership is the ownerReference, not the labels: a child whose labels were
    changed by hand (so the labelled watch lost it) is applied again, which restores them."""
    desired = children(replicas=1)
    ours = with_fields(desired[0])
    ours["metadata"]["ownerReferences"] = [{"uid": UID}]
    ours["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "Helm"
    kube = FakeKube(existing={"Service": ours})
    result = run(kube, apply.Memory(), [], desired)
    assert kube.requests[:3] == [
        ("apply", "Service", apply.FIELD_MANAGER),  # the dry-run create: 409
        ("get", "Service", ""),
        ("apply", "Service", apply.FIELD_MANAGER),  # the apply that takes it back
    ]
    assert ("v1", "Service", "demo") in result.patched


def test_an_optional_child_whose_kind_is_missing_is_skipped_with_a_backoff() -> None:
    """Finding 22.5: no ServiceMonitor CRD: the other children are applied, the ServiceMonitor
    is reported (not raised) and not sent again before its back-off has passed."""
    missing = ApiException(status=404, reason="Not Found")
    kube, memory = FakeKube(refuse={"ServiceMonitor": missing}), apply.Memory(base_backoff=10)
    desired = children(replicas=1, monitoring={"serviceMonitor": {"enabled": True}})
    result = run(kube, memory, [], desired)
    assert [k for _, k, _ in kube.requests] == ["Service", "Deployment", "ServiceMonitor"]
    assert len(result.skipped) == 1 and apply.NOT_SERVED in result.skipped[0]
    kube.requests.clear()
    again = run(kube, memory, [], desired)
    assert "ServiceMonitor" not in [k for _, k, _ in kube.requests]
    assert again.skipped == result.skipped


def test_a_required_kind_missing_is_backed_off_like_a_refusal() -> None:
    missing = ApiException(status=404, reason="Not Found")
    kube, memory = FakeKube(refuse={"Deployment": missing}), apply.Memory(base_backoff=10)
    with pytest.raises(apply.ResourceNotInstalled) as first:
        run(kube, memory, [], children(replicas=1))
    assert first.value.retry_in == 10
    with pytest.raises(apply.ChildRefused):
        run(kube, memory, [], children(replicas=1))
    assert [k for _, k, _ in kube.requests].count("Deployment") == 1


def test_a_merge_error_only_the_servers_apply_finds_is_a_refusal_with_backoff() -> None:
    """Finding 22.3: server-side apply answers 500 for duplicate list-map keys: a refusal with
    the server's message and a back-off, not an error retried every few seconds."""
    message = (
        "failed to create typed patch object (speech/demo; apps/v1, Kind=Deployment): "
        '.spec.template.spec.containers[name="runtime"].env: duplicate entries for key [name="A"]'
    )
    status = {"reason": "InternalError", "message": message}
    failed = ApiException(status=500, reason="Internal Server Error")
    failed.body = json.dumps(status)
    kube, memory = FakeKube(refuse={"Deployment": failed}), apply.Memory(base_backoff=10)
    with pytest.raises(apply.ChildRefused, match="duplicate entries for key") as first:
        run(kube, memory, [], children(replicas=1))
    assert first.value.retry_in == 10
    other = ApiException(status=500, reason="Internal Server Error")
    other.body = json.dumps({"message": "etcdserver: request timed out"})
    with pytest.raises(ApiException):  # a server in trouble: retried as an API error
        run(FakeKube(refuse={"Deployment": other}), apply.Memory(), [], children(replicas=1))


def test_a_refused_child_says_why_and_is_retried_after_a_growing_backoff() -> None:
    """Defect 2.3: the server's reason and message, and no request each reconcile."""
    status = {"reason": "Invalid", "message": 'Deployment.apps "demo" is invalid: spec.x: bad'}
    refused = ApiException(status=422, reason="Unprocessable Entity")
    refused.body = json.dumps(status)
    kube, memory = FakeKube(refuse={"Deployment": refused}), apply.Memory(base_backoff=10)
    desired = children(replicas=1)
    with pytest.raises(apply.ChildRefused) as first:
        run(kube, memory, [], desired)
    assert "422 Invalid" in str(first.value) and "spec.x: bad" in str(first.value)
    assert first.value.retry_in == 10
    deployment_requests = [r for r in kube.requests if r[1] == "Deployment"]
    assert len(deployment_requests) == 1
    with pytest.raises(apply.ChildRefused) as again:
        run(kube, memory, [], desired)  # within the back-off: not sent again
    assert [r for r in kube.requests if r[1] == "Deployment"] == deployment_requests
    assert "spec.x: bad" in str(again.value)
    # Past the back-off it is sent again, and the next wait is twice as long.
    assert memory.refused(NS, ("apps/v1", "Deployment", "demo"), apply.digest(desired[1]), "") == 20


def test_a_changed_spec_is_sent_at_once_despite_a_backoff() -> None:
    refused = ApiException(status=422, reason="Unprocessable Entity")
    refused.body = "{}"
    kube, memory = FakeKube(refuse={"Deployment": refused}), apply.Memory()
    with pytest.raises(apply.ChildRefused):
        run(kube, memory, [], children(replicas=1))
    kube.refuse.clear()
    kube.requests.clear()
    run(kube, memory, [], children(replicas=1, runtime={"threads": 2}))
    assert ("apply", "Deployment", apply.FIELD_MANAGER) in kube.requests


def test_managed_fields_reads_only_the_operators_apply_entry() -> None:
    obj = {
        "metadata": {
            "managedFields": [
                {"manager": apply.FIELD_MANAGER, "operation": "Update", "fieldsV1": {"f:a": {}}},
                {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:b": {}}},
                {
                    "manager": apply.FIELD_MANAGER,
                    "operation": "Apply",
                    "subresource": "status",
                    "fieldsV1": {"f:c": {}},
                },
            ]
        }
    }
    assert apply.managed_fields(obj) is None
    obj["metadata"]["managedFields"].append(
        {"manager": apply.FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:d": {}}}
    )
    assert apply.managed_fields(obj) == '{"f:d": {}}'
