"""Issue 22.10: how to wait for a rollout, run as docs/user-guide.md writes it, on the local
control plane with the real operator: the guide's upgrade of the example `conformer-de`
(examples/speechmodels/s3-credentials.yaml, with its prerequisite Secret), then each documented
wait. Both succeed once the new version serves everywhere; on a rollout that is rolled back
the generation wait fails instead of reporting success."""

from __future__ import annotations

import os
import re
import subprocess

import yaml
from kube_cluster import Cluster, OperatorProcess
from pkg_helpers import ROOT
from test_examples_live import in_namespace

GUIDE = ROOT / "docs" / "user-guide.md"
EXAMPLE = ROOT / "examples" / "speechmodels" / "s3-credentials.yaml"
SECRET = ROOT / "examples" / "speechmodels" / "prerequisites" / "s3-model-reader-secret.yaml"


def doc_block(name: str) -> str:
    """The shell block under `<!-- doc-test: NAME -->` in the user guide."""
    text = GUIDE.read_text()
    found = re.search(rf"<!-- doc-test: {name} -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert found, f"docs/user-guide.md lost its {name} block"
    return found.group(1)


def run_as_written(
    cluster: Cluster, block: str, namespace: str
) -> subprocess.CompletedProcess[str]:
    """The block in bash with the cluster's kubectl; only the namespace is the test's own."""
    script = block.replace("-n speech ", f"-n {namespace} ")
    assert script != block
    env = {
        **os.environ,
        "PATH": f"{cluster.bin}:{os.environ['PATH']}",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )


def status(cluster: Cluster, namespace: str) -> dict[str, object]:
    out = cluster.kubectl("get", "speechmodel", "conformer-de", "-n", namespace, "-o", "yaml")
    return dict(yaml.safe_load(out.stdout)["status"])


def test_the_documented_waits_return_when_the_new_version_serves_and_fail_on_a_rollback(
    cluster: Cluster, namespace: str, live_operator: OperatorProcess
) -> None:
    for path in (SECRET, EXAMPLE):
        objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        cluster.kubectl("apply", "-f", "-", input=in_namespace(objects, namespace))
    serving = "--for=jsonpath={.status.currentVersion}=1.4.2"
    cluster.kubectl("wait", "speechmodel/conformer-de", "-n", namespace, serving, "--timeout=120s")

    # The guide's upgrade, then its waits: they return only once 1.5.0 serves everywhere.
    patched = run_as_written(cluster, doc_block("update-version"), namespace)
    assert patched.returncode == 0, patched.stderr
    for wait in ("wait-version", "wait-generation"):
        out = run_as_written(cluster, doc_block(wait), namespace)
        assert out.returncode == 0, f"{wait}: {out.stderr}"
        now = status(cluster, namespace)
        assert now["currentVersion"] == "1.5.0" and now["phase"] == "Ready", (wait, now)

    # A version whose pods crash (the fake nodes' cue in the URI) is rolled back: the
    # generation wait fails; a plain `--for=condition=Ready` would have passed at once.
    bad = '{"spec":{"model":{"uri":"s3://ml-artifacts/stt/conformer-de/kwok-crash-1.6.0","version":"1.6.0"}}}'
    cluster.kubectl(
        "patch", "speechmodel", "conformer-de", "-n", namespace, "--type=merge", "-p", bad
    )
    out = run_as_written(cluster, doc_block("wait-generation"), namespace)
    # The generation and Reconciling=False waits are met (the rollback is done); Stalled=False
    # is not.
    assert out.returncode != 0 and out.stdout.count("condition met") == 2, (out.stdout, out.stderr)
    now = status(cluster, namespace)
    assert now["failedVersion"] == "1.6.0" and now["currentVersion"] == "1.5.0", now
