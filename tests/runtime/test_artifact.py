"""Contract 2: an artifact loads only when every file matches its manifest digest."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_runtime.artifact import ArtifactError, load_artifact, parse_tokens
from kubescribe_runtime.manifest import MANIFEST_NAME, ManifestError, sha256_file
from rt_fixtures import TONE_TOKENS, write_artifact


@pytest.fixture
def artifact_dir(tmp_path: Path) -> Path:
    return write_artifact(tmp_path / "artifact", TONE_TOKENS)


def test_loads_a_complete_artifact(artifact_dir: Path) -> None:
    artifact = load_artifact(artifact_dir)
    assert artifact.tokens == tuple(TONE_TOKENS)
    assert artifact.digest == sha256_file(artifact_dir / MANIFEST_NAME)
    assert artifact.model_path == artifact_dir / "model.onnx"


def test_a_missing_file_is_named(artifact_dir: Path) -> None:
    (artifact_dir / "config.json").unlink()
    with pytest.raises(
        ArtifactError, match=r"config\.json: listed in kubescribe\.yaml but missing"
    ):
        load_artifact(artifact_dir)


def test_a_modified_file_is_named(artifact_dir: Path) -> None:
    with (artifact_dir / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256 mismatch"):
        load_artifact(artifact_dir)


def test_an_unlisted_model_file_is_refused(artifact_dir: Path) -> None:
    with pytest.raises(ArtifactError, match=r"'model\.int8\.onnx' is not part of the artifact"):
        load_artifact(artifact_dir, "model.int8.onnx")


def test_missing_directory_and_manifest(tmp_path: Path, artifact_dir: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nowhere")
    (artifact_dir / MANIFEST_NAME).unlink()
    with pytest.raises(ManifestError, match="manifest not found"):
        load_artifact(artifact_dir)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a 0\nb 0\n", "duplicate id 0"),
        ("a 0\nb 2\n", "without gaps"),
        ("a zero\n", "expected 'symbol id'"),
        ("", "without gaps"),
    ],
)
def test_bad_tokens(text: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        parse_tokens(text)


def test_tokens_must_match_the_manifest_vocab(tmp_path: Path) -> None:
    directory = write_artifact(tmp_path / "a", ["▁low", "<blk>", "▁high"])
    with pytest.raises(ArtifactError, match="last token must be <blk>"):
        load_artifact(directory)
