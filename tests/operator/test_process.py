"""`kubescribe operator`: its command line, liveness and metrics endpoints, and JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kube_cluster import Cluster, OperatorProcess, eventually, free_port
from live import Models, is_ready, manifest
from prometheus_client.parser import text_string_to_metric_families

CLI = [sys.executable, "-c", "import sys; from kubescribe.cli import main; sys.exit(main())"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_help_lists_the_operator_flags() -> None:
    result = run_cli("operator", "--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--namespace",
        "--all-namespaces",
        "--liveness-port",
        "--metrics-port",
        "--log-format",
        "--peering",
        "--priority",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-port", "70000"], "port out of range"),
        (["--log-format", "xml"], "invalid choice"),
        (["--namespace", "a", "--all-namespaces"], "not allowed with"),
        (["--resync-seconds", "0"], "must be positive"),
    ],
)
def test_bad_flags_are_refused(args: list[str], message: str) -> None:
    result = run_cli("operator", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_credentials_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(tmp_path / "absent")
    result = run_cli("operator", "--metrics-port", "0", "--liveness-port", "0", env=env)
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip().splitlines()[0]]
        and "no Kubernetes credentials" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_liveness_metrics_and_json_logs(
    cluster: Cluster, namespace: str, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    """The real operator on the real control plane: its probe, its metrics, its JSON logs."""
    liveness = free_port()
    proc = OperatorProcess(operator_kubeconfig, tmp_path, "--liveness-port", str(liveness))
    proc.start()
    models = Models(cluster, namespace)
    try:
        eventually(lambda: http_status(f"http://127.0.0.1:{liveness}/healthz") == 200, "liveness")
        models.create(manifest())
        models.wait_status(is_ready("1.0"), "1.0 ready")
        text = eventually(
            lambda: (
                (t := proc.metrics())
                and metric(t, "kubescribe_operator_rollouts_total", result="succeeded") >= 1
                and t
            ),
            "the rollout in the metrics",
        )
        assert metric(text, "kubescribe_operator_reconciles_total") >= 1
        assert metric(text, "kubescribe_operator_rollouts_total", result="started") == 1
        assert metric(text, "kubescribe_operator_reconcile_duration_seconds_count") >= 1
        assert (
            metric(text, "kubescribe_operator_writes_total", kind="Deployment", verb="apply") == 1
        )
        assert "kubescribe_operator_reconcile_errors_total" in text
    finally:
        cluster.kubectl("delete", "speechmodels", "--all", "-n", namespace, "--timeout=60s")
        proc.kill()
    lines = [line for line in proc.logs().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"message", "severity", "timestamp"} <= set(r) for r in records)
    assert any(r.get("k8s", {}).get("name") == "demo" for r in records)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
