"""Issue 22 on the real control plane with the real operator: the pod options of a real cluster
(deliver 2) reach the pods the ReplicaSet creates, and kubectl describe no longer shows kopf's
copy of the spec (22.12) while updates still roll."""

from __future__ import annotations

from kube_cluster import Cluster, OperatorProcess, eventually
from live import Models, is_ready, manifest

POD_OPTIONS = {
    "serviceAccountName": "model-reader",
    "imagePullSecrets": ["registry-example-com"],
    "labels": {"cost-center": "speech"},
    "annotations": {"sidecar.istio.io/inject": "false"},
    "fixedUser": False,
}


def test_pod_options_reach_the_pods(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    cluster.kubectl("create", "serviceaccount", "model-reader", "-n", namespace)
    models = Models(cluster, namespace)
    models.create(manifest(pod=POD_OPTIONS))
    models.wait_status(is_ready("1.0"), "1.0 ready with the pod options")
    pods = models.pods()
    assert pods
    for pod in pods:
        spec, meta = pod["spec"], pod["metadata"]
        assert spec["serviceAccountName"] == "model-reader"
        assert spec["automountServiceAccountToken"] is False
        assert spec["imagePullSecrets"] == [{"name": "registry-example-com"}]
        assert meta["labels"]["cost-center"] == "speech"
        assert meta["annotations"]["sidecar.istio.io/inject"] == "false"
        # The platform assigns the user (restricted-v2): nothing pinned, still non-root.
        security = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(security), security
        assert security["runAsNonRoot"] is True
        for container in spec["containers"] + spec["initContainers"]:
            assert "runAsUser" not in container["securityContext"]


def test_describe_shows_no_spec_blob_and_updates_still_roll(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")
    models.bump("demo", "2.0")  # kopf must still see the change (on.update)
    models.wait_status(is_ready("2.0"), "2.0 ready")

    def kopf_line() -> str | None:
        out = cluster.kubectl("describe", "speechmodel", "demo", "-n", namespace).stdout
        lines = [line for line in out.splitlines() if "Last Handled Configuration" in line]
        return lines[0] if lines else None

    line = eventually(kopf_line, "kopf's last-handled state in describe")
    assert "digest" in line and "s3://" not in line and len(line) < 100, line
