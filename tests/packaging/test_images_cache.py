"""cluster/images.py's cache keys: an image is rebuilt when, and only when, what goes into it
changes (its Dockerfile, a file its COPY steps read, a lock, the base), never for a file it does
not copy. Pure: nothing is built."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "cluster"))
import images  # noqa: E402

BASE = "localhost/kubescribe/python:3.11-bookworm-0"


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of what the two Dockerfiles read, plus a file neither copies."""
    for path in ("runtime/Dockerfile.cpu", "operator/Dockerfile", ".dockerignore",
                 "runtime/requirements-cpu.txt", "operator/requirements.txt", "pyproject.toml",
                 "README.md"):  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, tmp_path / path)
    for package in ("kubescribe", "runtime/kubescribe_runtime", "operator/kubescribe_operator",
                    "modeling/kubescribe_modeling", "examples/models/demo"):  # fmt: skip
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "x.py").write_text("one\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "images.md").write_text("one\n")
    monkeypatch.setattr(images, "ROOT", tmp_path)
    return tmp_path


def keys() -> dict[str, str]:
    recipes = [
        images.Recipe("runtime-cpu", images.ROOT / "runtime" / "Dockerfile.cpu", "r"),
        images.Recipe("operator", images.ROOT / "operator" / "Dockerfile", "o"),
    ]
    return {recipe.short: images.image_key(recipe, BASE) for recipe in recipes}


@pytest.mark.parametrize(
    ("changed", "rebuilt"),
    [
        ("docs/images.md", set()),
        ("runtime/kubescribe_runtime/__pycache__/x.cpython-311.pyc", set()),
        ("examples/models/demo/x.py", {"runtime-cpu"}),
        ("runtime/requirements-cpu.txt", {"runtime-cpu", "operator"}),  # both copy runtime/
        ("operator/requirements.txt", {"runtime-cpu", "operator"}),
        # Each build stage copies runtime/ and operator/ whole, Dockerfiles included.
        ("operator/Dockerfile", {"runtime-cpu", "operator"}),
        ("runtime/Dockerfile.cpu", {"runtime-cpu", "operator"}),
        ("kubescribe/x.py", {"runtime-cpu", "operator"}),
    ],
)
def test_a_change_rebuilds_only_the_images_that_copy_it(
    tree: Path, changed: str, rebuilt: set[str]
) -> None:
    before = keys()
    path = tree / changed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + "changed\n")
    after = keys()
    assert {short for short in before if before[short] != after[short]} == rebuilt


def test_another_base_rebuilds_every_image(tree: Path) -> None:
    recipe = images.Recipe("operator", tree / "operator" / "Dockerfile", "o")
    assert images.image_key(recipe, BASE) != images.image_key(recipe, BASE + "1")


def test_copied_sources_are_the_dockerfiles_copy_steps() -> None:
    assert images.copied_sources(ROOT / "operator" / "Dockerfile") == [
        "operator/requirements.txt", "pyproject.toml", "README.md", "kubescribe", "runtime",
        "operator", "modeling",
    ]  # fmt: skip
