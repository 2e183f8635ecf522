"""`kubescribe operator`: its command line, liveness and metrics endpoints, and JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube.deployment_controller import DeploymentController
from kube.operator_process import OperatorProcess
from kube.runner import KubeThread, eventually
from kube.scenario import (
    GROUP,
    NS,
    PLURAL,
    add_peering,
    free_port,
    http_get,
    is_ready,
    manifest,
    metric,
    wait_status,
)

# The timeout only bounds a hang (waits inside are event-driven, each bounded on its own).
pytestmark = [pytest.mark.xdist_group("operator-integration"), pytest.mark.timeout(300)]

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
    kube: KubeThread,
    kubeconfig: Path,
    tmp_path: Path,
    controller: DeploymentController,
    api: kubernetes.client.ApiClient,
) -> None:
    kube.call(lambda: add_peering(kube.emulator))
    liveness, metrics = free_port(), free_port()
    proc = OperatorProcess(
        kubeconfig, tmp_path, "--liveness-port", str(liveness), "--metrics-port", str(metrics)
    )
    proc.start()
    try:
        eventually(
            lambda: http_get(f"http://127.0.0.1:{liveness}/healthz")[0] == 200,
            what="the liveness probe",
        )
        body: dict[str, Any] = manifest()
        kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, "v1alpha1", NS, PLURAL, body
        )
        wait_status(kube, is_ready("1.0"), "1.0 ready")

        def scraped() -> str | None:
            status, text = http_get(f"http://127.0.0.1:{metrics}/metrics")
            done = metric(text, "kubescribe_operator_rollouts_total", result="succeeded") >= 1
            return text if status == 200 and done else None

        text = eventually(scraped, what="the rollout in the metrics")
        assert metric(text, "kubescribe_operator_reconciles_total") >= 1
        assert metric(text, "kubescribe_operator_rollouts_total", result="started") == 1
        assert metric(text, "kubescribe_operator_reconcile_duration_seconds_count") >= 1
        assert (
            metric(text, "kubescribe_operator_writes_total", kind="Deployment", verb="create") == 1
        )
        assert "kubescribe_operator_reconcile_errors_total" in text
    finally:
        proc.kill()
    lines = [line for line in proc.logs().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"message", "severity", "timestamp"} <= set(r) for r in records)
    assert any(r.get("k8s", {}).get("name") == "demo" for r in records)
