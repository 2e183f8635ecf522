"""`kubescribe render FILE`: the operator's objects as multi-document YAML, no cluster."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubescribe_operator import builders, cli
from kubescribe_operator.spec import SpeechModel

from kubescribe import cli as dispatcher

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "speechmodels").glob("*.yaml"))
GOOD = """\
apiVersion: kubescribe.io/v1alpha1
kind: SpeechModel
metadata: {name: demo}
spec:
  model: {uri: /opt/kubescribe/models/demo, version: "0.1.0"}
  replicas: 2
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = dispatcher.main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_render_prints_what_the_builders_build(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([str(path)], capsys)
    assert code == 0 and err == ""
    assert out.startswith("---\n")
    documents = list(yaml.safe_load_all(out))
    manifest = SpeechModel.model_validate(yaml.safe_load(path.read_text()))
    expected = builders.build_children(
        manifest.name,
        manifest.namespace,
        cli.PLACEHOLDER_UID,
        manifest.spec,
        manifest.spec.model.ref(),
    )
    assert documents == expected


def test_render_shows_the_default_cpu_target_of_min_max_autoscaling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect 2.9: only minReplicas/maxReplicas gives the HPA's default, CPU 80 %."""
    path = tmp_path / "scaled.yaml"
    path.write_text(
        GOOD.replace("  replicas: 2\n", "  autoscaling: {minReplicas: 2, maxReplicas: 4}\n")
    )
    code, out, _ = run([str(path)], capsys)
    (hpa,) = [d for d in yaml.safe_load_all(out) if d["kind"] == "HorizontalPodAutoscaler"]
    assert code == 0
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]


def test_render_several_documents_and_a_default_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = GOOD.replace("name: demo", "name: other").replace("replicas: 2", "replicas: 1")
    path = tmp_path / "two.yaml"
    path.write_text(GOOD + "---\n" + second)
    code, out, _ = run([str(path), "--namespace", "speech"], capsys)
    assert code == 0
    objects = list(yaml.safe_load_all(out))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Service", "demo"),
        ("Deployment", "demo"),
        ("PodDisruptionBudget", "demo"),
        ("Service", "other"),
        ("Deployment", "other"),
    ]
    assert {o["metadata"]["namespace"] for o in objects} == {"speech"}


def test_render_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(read=lambda: GOOD))
    code, out, _ = run(["-"], capsys)
    assert code == 0
    assert [o["kind"] for o in yaml.safe_load_all(out)] == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
    ]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (GOOD.replace('version: "0.1.0"', 'version: "0.1 beta"'), "spec.model.version"),
        (GOOD.replace("replicas: 2", "replicas: -2"), "spec.replicas"),
        (GOOD.replace("replicas: 2", "replica: 2"), "'replica' was unexpected"),
        (
            GOOD.replace(
                "replicas: 2",
                "autoscaling: {minReplicas: 5, maxReplicas: 2, targetCPUUtilization: 50}",
            ),
            "minReplicas must be <= maxReplicas",
        ),
        (GOOD.replace("name: demo", "name: Demo"), "DNS-1035"),
        (GOOD.replace("kind: SpeechModel", "kind: Deployment"), "expected apiVersion"),
        ("spec: [unclosed", "not valid YAML"),
        ("", "no document"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_a_bad_manifest_is_one_line_and_exit_code_2(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run([str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kubescribe render: error: ")
    assert fragment in err


def test_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "cannot read" in err and "No such file" in err


def test_the_installed_command(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "kubescribe.cli", "render", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = [o["kind"] for o in yaml.safe_load_all(result.stdout)]
    assert kinds == ["Service", "Deployment", "PodDisruptionBudget"]


def test_operator_command_runs_the_process_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    fake = types.ModuleType("kubescribe_operator.process")
    fake.main = lambda argv: calls.append(argv) or 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kubescribe_operator.process", fake)
    assert dispatcher.main(["operator", "--namespace", "speech"]) == 7
    assert calls == [["--namespace", "speech"]]
