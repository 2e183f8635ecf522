"""apply.py's pure planning: what request (if any) takes a live child to the desired one."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubescribe_operator.api import ModelRef
from kubescribe_operator.apply import LAST_APPLIED, merge_patch, plan, same, stale_children
from kubescribe_operator.builders import build_children
from kubescribe_operator.spec import SpeechModelSpec

UID = "0000-1111"


def children(**spec: Any) -> dict[str, dict[str, Any]]:
    model = {"uri": "s3://models/demo/1.0", "version": "1.0"}
    parsed = SpeechModelSpec.model_validate({"model": model, **spec})
    built = build_children(
        "demo", "default", UID, parsed, ModelRef(uri=model["uri"], version="1.0")
    )
    return {obj["kind"]: obj for obj in built}


def served(body: dict[str, Any], **server_fields: Any) -> dict[str, Any]:
    """What the API server returns after a create: the body plus its own fields."""
    live = copy.deepcopy(body)
    live["metadata"].update(uid="u", resourceVersion="7", generation=1, **server_fields)
    live["status"] = {"observedGeneration": 1}
    return live


@pytest.mark.parametrize(
    ("want", "have", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # fields the server adds are not a difference
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {}, False),
        ([{"name": "x"}], [{"name": "x", "protocol": "TCP"}], True),  # defaulted inside lists
        ([{"name": "x"}], [{"name": "x"}, {"name": "y"}], False),
        ({"limits": {"cpu": "1000m"}}, {"limits": {"cpu": "1"}}, True),  # normalised quantity
        ({"image": "1000m"}, {"image": "1"}, False),  # only resources are quantities
        ({"port": 80}, {"port": "80"}, False),
        ({"flag": True}, {"flag": 1}, False),
        # The server omits zero values (omitempty): absent equals empty, but not non-empty.
        ({"env": [], "meta": {}, "n": 0, "f": False, "s": ""}, {}, True),
        ({"env": [{"name": "A"}]}, {}, False),
        ({"f": True}, {}, False),
    ],
)
def test_same(want: Any, have: Any, expected: bool) -> None:
    assert same(want, have) is expected


def test_merge_patch_does_not_fight_omitted_zero_values() -> None:
    want = {"spec": {"volumes": [], "replicas": 0, "paused": False, "image": "x"}}
    assert merge_patch(None, want, {"spec": {"image": "x"}}) == {}
    assert merge_patch(None, want, {"spec": {"image": "y"}}) == {"spec": {"image": "x"}}


def test_merge_patch_sets_differences_and_removes_what_was_applied_before() -> None:
    last = {"metadata": {"labels": {"keep": "1", "gone": "1"}}, "spec": {"a": 1}}
    want = {"metadata": {"labels": {"keep": "1"}}, "spec": {"a": 2}}
    have = {"metadata": {"labels": {"keep": "1", "gone": "1", "other": "x"}}, "spec": {"a": 1}}
    assert merge_patch(last, want, have) == {
        "metadata": {"labels": {"gone": None}},
        "spec": {"a": 2},
    }
    assert merge_patch(want, want, {**have, "metadata": {"labels": {"keep": "1"}}}) == {
        "spec": {"a": 2}
    }


def test_plan_creates_then_does_nothing_when_nothing_changed() -> None:
    for child in children(replicas=2).values():
        body = plan(child, None)
        assert body is not None
        assert json.loads(body["metadata"]["annotations"][LAST_APPLIED]) == child
        assert plan(child, served(body)) is None, child["kind"]


def test_plan_patches_drift_with_the_live_resource_version() -> None:
    deployment = children()["Deployment"]
    live = served(plan(deployment, None) or {})
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "hand-edited"
    patch = plan(deployment, live)
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "7"}
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert containers == deployment["spec"]["template"]["spec"]["containers"]
    assert set(patch["spec"]) == {"template"}


def test_plan_never_writes_replicas_when_the_hpa_owns_them() -> None:
    fixed = children(replicas=2)["Deployment"]
    scaled = children(autoscaling={"minReplicas": 1, "maxReplicas": 5, "targetCPUUtilization": 60})
    deployment = scaled["Deployment"]
    assert "replicas" not in deployment["spec"]
    # Created with fixed replicas, then autoscaling turned on, and the HPA scaled it to 4.
    live = served(plan(fixed, None) or {})
    live["spec"]["replicas"] = 4
    patch = plan(deployment, live)
    assert patch is not None and "replicas" not in patch.get("spec", {})
    live = served(plan(deployment, None) or {})
    live["spec"]["replicas"] = 4
    assert plan(deployment, live) is None
    new_model = SpeechModelSpec.model_validate(
        {
            "model": {"uri": "s3://models/demo/2.0", "version": "2.0"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 5, "targetCPUUtilization": 60},
        }
    )
    rolled = build_children(
        "demo", "default", UID, new_model, ModelRef(uri="s3://models/demo/2.0", version="2.0")
    )
    patch = plan(next(c for c in rolled if c["kind"] == "Deployment"), live)
    assert patch is not None and "template" in patch["spec"]
    assert "replicas" not in patch["spec"]


def test_stale_children_are_only_owned_ones_no_longer_desired() -> None:
    built = children(replicas=3)
    desired = [built["Deployment"], built["Service"]]
    foreign = copy.deepcopy(built["PodDisruptionBudget"])
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    existing = [served(c) for c in built.values()] + [foreign]
    assert [c["kind"] for c in stale_children(existing, desired, UID)] == ["PodDisruptionBudget"]


def test_every_kind_the_builders_make_is_applied_and_pruned() -> None:
    from kubescribe_operator.apply import CHILD_KINDS

    full = children(
        autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60},
        monitoring={"serviceMonitor": {"enabled": True}},
    )
    assert {(c["apiVersion"], c["kind"]) for c in full.values()} == set(CHILD_KINDS)
