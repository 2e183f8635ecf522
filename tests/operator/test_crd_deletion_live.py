"""Issue 22.7: deleting the SpeechModel CRD while the operator runs, on a control plane of its
own (it deletes the CRD, which the shared cluster's other tests use).

The API server then deletes every SpeechModel but no longer offers `patch` on them in its
discovery, so kopf stops serving them: before crd_release.py the operator never removed its
finalizer and `kubectl delete -f charts/kubescribe/crds/` timed out, the CRD Terminating for ever.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_cluster import Cluster, LocalCluster, OperatorProcess, build, eventually
from live import Models, manifest

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "kubescribe" / "crds"
KOPF_CRDS = ROOT / "charts" / "kubescribe" / "charts" / "kopf-peering" / "crds"
FINALIZER = "kubescribe.io/operator"


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bin_dir = os.environ.get("KUBESCRIBE_CLUSTER_BIN")
    local = LocalCluster(
        tmp_path_factory.mktemp("own-cluster"), Path(bin_dir) if bin_dir else build()
    )
    local.start()
    try:
        yield Cluster(local)
    finally:
        local.stop()


def test_deleting_the_crd_while_the_operator_runs_completes(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = own_cluster
    cluster.kubectl("apply", "-f", str(CHART_CRDS), "-f", str(KOPF_CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/speechmodels.kubescribe.io", "crd/clusterkopfpeerings.kopf.dev",
    )  # fmt: skip
    cluster.create_namespace("speech")
    operator = OperatorProcess(cluster.kubeconfig, tmp_path, "--standalone")
    operator.start()
    try:
        models = Models(cluster, "speech")
        models.create(manifest())
        eventually(
            lambda: FINALIZER in ((models.get() or {}).get("metadata", {}).get("finalizers") or []),
            "the operator's finalizer on the SpeechModel",
        )
        # The uninstall's last line, first: it returns once the CRD is gone.
        out = cluster.kubectl("delete", "-f", str(CHART_CRDS), "--timeout=120s", check=False)
        assert out.returncode == 0, (out.stderr, operator.logs()[-3000:])
        crds = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
        assert (
            "customresourcedefinition.apiextensions.k8s.io/speechmodels.kubescribe.io" not in crds
        )
        assert "customresourcedefinition.apiextensions.k8s.io/clusterkopfpeerings.kopf.dev" in crds
        assert operator.alive(), operator.logs()[-3000:]
    finally:
        operator.kill()
