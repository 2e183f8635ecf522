"""Artifacts that fetch, verify and load, and transcribe badly: what the quality gate refuses
(tests/runtime/test_quality_gate.py with the real server, tests/operator/test_quality_gate_live.py
with real pods)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubescribe_runtime.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file

DEMO_ARTIFACT = Path(__file__).resolve().parents[1] / "examples" / "models" / "demo"


def copy_artifact(source: Path, directory: Path) -> ArtifactManifest:
    """The files of ``source``'s manifest (and the manifest) under ``directory``; the ONNX
    files are hard links where the file system allows (nothing here writes to them), every other
    file a copy (the toolkit rewrites the manifest in place)."""
    manifest = ArtifactManifest.load(source)
    directory.mkdir(parents=True, exist_ok=True)
    for name in [*manifest.files, MANIFEST_NAME]:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            if not name.endswith(".onnx"):
                raise OSError("copied")
            os.link(source / name, directory / name)
        except OSError:
            shutil.copyfile(source / name, directory / name)
    return manifest


def shuffled_tokens_artifact(directory: Path, source: Path = DEMO_ARTIFACT) -> str:
    """A copy of ``source`` whose tokens.txt (and vocab.txt) is permuted: every symbol but the
    blank moved 7 places, so the model loads, answers 200 and spells nonsense. Its manifest is
    rewritten so every digest matches; returns the sha256 of its kubescribe.yaml."""
    manifest = copy_artifact(source, directory)
    lines = (source / "tokens.txt").read_text(encoding="utf-8").splitlines()
    symbols = [line.rpartition(" ")[0] for line in lines[:-1]]  # the blank stays last
    moved = symbols[7:] + symbols[:7]
    text = "".join(f"{s} {i}\n" for i, s in enumerate(moved)) + lines[-1] + "\n"
    files = dict(manifest.files)
    for name in ("tokens.txt", "vocab.txt"):
        if name in files:
            (directory / name).unlink()
            (directory / name).write_text(text, encoding="utf-8")
            files[name] = sha256_file(directory / name)
    rewritten = manifest.model_copy(update={"files": files})
    (directory / MANIFEST_NAME).unlink()
    (directory / MANIFEST_NAME).write_text(rewritten.to_yaml(), encoding="utf-8")
    assert ArtifactManifest.load(directory).files == files
    return sha256_file(directory / MANIFEST_NAME)
