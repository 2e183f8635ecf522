"""Failure combined with another change, duplicate input, unsafe input, relabelled children and
overlapping releases, on the real control plane (issue 22, findings 1, 3, 4, 8 and 9).

- 22.1: one edit bumps the version and adds a crash marker to `runtime.env`; the rollback puts
  the whole last good pod template back (its env too), so the old ReplicaSet serves again;
- 22.3: duplicate `runtime.env` names are refused by the API server, with the entry's path;
- 22.4: `model.cache.hostPath` outside the documented allow-list is refused by the API server;
- 22.9: a child whose labels were changed by hand, its ownerReference intact, is taken back (its
  labels restored), never reported as someone else's;
- 22.8: two releases on one namespace: detected, warned, and only one acts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import kubernetes
import pytest
from kube_cluster import Cluster, OperatorProcess, eventually
from live import Models, acting_pids, condition, env_marker, is_ready, manifest

MANAGED_BY = "app.kubernetes.io/managed-by"


def container_env(template: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["name"] for c in template["spec"]["containers"] for e in c.get("env") or []]


def test_a_rollback_restores_the_whole_last_good_pod_template(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    deployment = models.deployment() or {}
    good = deployment["spec"]["template"]
    (good_rs,) = [rs["metadata"]["name"] for rs in models.replicasets()]

    # One edit: a new version and an env var that makes its pods crash.
    models.patch_spec(
        "demo",
        {
            "model": {"uri": "s3://models/demo/2.0", "version": "2.0"},
            "runtime": {"device": "cpu", **env_marker("KWOK_CRASH")},
        },
    )
    rolled_back = models.wait_status(
        lambda s: (
            s.get("failedVersion") == "2.0"
            and condition(s, "Stalled").get("reason") == "RolledBack"
        ),
        "the rollback of 2.0",
    )
    assert rolled_back["lastKnownGood"]["version"] == "1.0"
    # The Deployment runs 1.0's whole template again: the env as it was, the same ReplicaSet.
    back = eventually(
        lambda: (
            (d := models.deployment())
            and "KWOK_CRASH" not in container_env(d["spec"]["template"])
            and d
        ),
        lambda: f"1.0's template back: {models.rollout_state()}",
    )
    assert back["spec"]["template"] == good
    eventually(
        lambda: (
            models.pods_by_version() == {"1.0": 2}
            and {rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in models.replicasets()}.get(
                good_rs
            )
            == 2
        ),
        lambda: f"1.0's ReplicaSet serving alone: {models.rollout_state()}",
    )
    # The status tells it as it is: rolled back, the old version serving on every replica.
    settled = models.wait_status(
        lambda s: s.get("readyReplicas") == 2 and s.get("phase") == "Degraded",
        "1.0 serving on 2 replicas after the rollback",
    )
    assert condition(settled, "Ready")["reason"] == "RolledBack"
    assert condition(settled, "Reconciling")["status"] == "False"
    assert "rolled back to model version 1.0" in condition(settled, "Stalled")["message"]


def kubectl_apply(cluster: Cluster, body: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        (
            {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
            "spec.runtime.env[1]",
            "Duplicate value",
        ),
        (
            {
                "model": {
                    "uri": "s3://models/demo/1.0",
                    "version": "1.0",
                    "cache": {"hostPath": "/"},
                }
            },
            "spec.model.cache.hostPath",
            "should match",
        ),
        (
            {
                "model": {
                    "uri": "s3://m/1.0",
                    "version": "1.0",
                    "cache": {"hostPath": "/var/cache/kubescribe/../../../etc"},
                },
            },
            "spec.model.cache.hostPath",
            "should match",
        ),
    ],
    ids=["duplicate-env-name", "host-path-root", "host-path-escaping-the-allow-list"],
)
def test_the_api_server_refuses_duplicate_env_names_and_unsafe_host_paths(
    cluster: Cluster,
    namespace: str,
    spec: dict,
    path: str,
    fragment: str,  # type: ignore[type-arg]
) -> None:
    """Findings 22.3 and 22.4: refused at the door, with the field's path, before any
    operator sees them (no 500 from the Deployment's apply, no chown of the node's `/`)."""
    body = manifest(**spec)
    body["metadata"]["namespace"] = namespace
    if "model" in spec:
        body["spec"]["pod"] = {"fixedUser": True}
    refused = kubectl_apply(cluster, body)
    assert refused.returncode != 0
    assert path in refused.stderr and fragment in refused.stderr, refused.stderr
    with pytest.raises(kubernetes.client.ApiException) as gone:
        Models(cluster, namespace).custom.get_namespaced_custom_object(
            "kubescribe.io", "v1alpha1", namespace, "speechmodels", "demo"
        )
    assert gone.value.status == 404


def test_a_relabelled_child_with_its_owner_reference_is_taken_back(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    """Finding 22.9: `app.kubernetes.io/managed-by=Helm` set by hand on the Deployment takes it
    out of the operator's labelled watch; its ownerReference still names the SpeechModel, so it
    is the model's: the operator applies it again (labels back), no ChildConflict, no outage."""
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    cluster.kubectl(
        "label", "deployment", "demo", "-n", namespace, f"{MANAGED_BY}=Helm", "--overwrite"
    )
    eventually(
        lambda: (
            ((models.deployment() or {}).get("metadata") or {}).get("labels", {}).get(MANAGED_BY)
            == "kubescribe-operator"
        ),
        lambda: f"the label put back; status {models.status()}",
    )
    status = models.wait_status(is_ready("1.0"), "still ready")
    assert "ChildConflict" not in json.dumps(status)
    assert "ChildConflict" not in models.event_reasons()
    assert models.pods_by_version() == {"1.0": 2}


def test_overlapping_releases_are_detected_and_one_leaves_the_model(
    cluster: Cluster,
    namespace: str,
    live_operator: OperatorProcess,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """Finding 22.8: a second release watching the test's namespace beside the cluster-wide one
    (standalone: the same ServiceAccount, another release name). One of them warns
    (OverlappingReleases) and leaves the model to the other: a later rollout is announced once,
    written by one process, and no ChildConflict ever shows."""
    (tmp_path / "other").mkdir()
    other = OperatorProcess(
        operator_kubeconfig,
        tmp_path / "other",
        "--namespace", namespace, "--standalone", "--peering", "team-release",
    )  # fmt: skip
    other.start()
    models = Models(cluster, namespace)
    try:
        # A release yields to another's status writes made since it started (older entries may
        # be a removed release's): the model comes only once the second release has started, or
        # on a loaded machine the first could write its last status before that, and no write
        # would ever count.
        eventually(lambda: _serves_metrics(other), "the second release up (its /metrics)")
        models.create(manifest())
        models.wait_status(is_ready("1.0"), "1.0 ready")
        models.wait_events(lambda r: "OverlappingReleases" in r, "the overlap warned")
        since = cluster.audit_offset()
        models.bump("demo", "2.0")
        models.wait_status(is_ready("2.0"), "2.0 ready")
        started = [e for e in models.event_log() if e.startswith("RolloutStarted") and "2.0" in e]
        assert started == ["RolloutStarted: rolling out model version 2.0 (replacing 1.0) (x1)"]
        assert len(acting_pids(cluster, since, namespace)) == 1
        assert "ChildConflict" not in models.event_reasons()
        models.delete()
        models.wait_gone()
    finally:
        other.kill()
        print(other.logs()[-10000:])


def _serves_metrics(operator: OperatorProcess) -> bool:
    try:
        return bool(operator.metrics())
    except OSError:  # not listening yet
        return False
