"""Contract 2: load and verify an artifact directory.

Every file listed in ``kubescribe.yaml`` must be present with the listed sha256; the artifact's
digest is the sha256 of ``kubescribe.yaml`` itself (what ``SpeechModel.spec.model.sha256`` pins).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubescribe.errors import KubescribeError
from kubescribe_runtime.manifest import MANIFEST_NAME, ArtifactManifest, sha256_file

TOKENS_FILE = "tokens.txt"
WORD_BOUNDARY = "▁"
BLANK = "<blk>"


class ArtifactError(KubescribeError):
    """The artifact is incomplete, corrupted or inconsistent."""


@dataclass(frozen=True)
class Artifact:
    directory: Path
    manifest: ArtifactManifest
    digest: str  # sha256 of kubescribe.yaml
    model_path: Path
    tokens: tuple[str, ...]  # id -> symbol, the blank last


def verify_files(directory: Path, manifest: ArtifactManifest) -> None:
    """Raise :class:`ArtifactError` naming the first missing or mismatched file."""
    for name, expected in sorted(manifest.files.items()):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{MANIFEST_NAME}: file name {name!r} escapes the artifact")
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {MANIFEST_NAME} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)"
            )


def parse_tokens(text: str, source: str = TOKENS_FILE) -> tuple[str, ...]:
    """Parse ``symbol id`` lines (sherpa-onnx's tokens.txt) into an id-indexed tuple."""
    by_id: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        symbol, sep, id_text = line.rstrip("\n").rpartition(" ")
        if not sep or not id_text.isdigit():
            raise ArtifactError(f"{source}:{number}: expected 'symbol id', got {line!r}")
        token_id = int(id_text)
        if token_id in by_id:
            raise ArtifactError(f"{source}:{number}: duplicate id {token_id}")
        by_id[token_id] = symbol
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise ArtifactError(f"{source}: ids must be 0..N-1 without gaps")
    return tuple(by_id[i] for i in range(len(by_id)))


def load_artifact(directory: Path, model_file: str = "model.onnx") -> Artifact:
    """Load ``directory``, verifying every file; ``model_file`` picks the ONNX file to serve."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: artifact directory not found")
    manifest = ArtifactManifest.load(directory)
    verify_files(directory, manifest)
    if model_file not in manifest.files:
        onnx_files = sorted(n for n in manifest.files if n.endswith(".onnx"))
        raise ArtifactError(
            f"{directory}: model file {model_file!r} is not part of the artifact "
            f"(it has {', '.join(onnx_files) or 'no ONNX file'})"
        )
    if TOKENS_FILE not in manifest.files:
        raise ArtifactError(f"{directory}: {TOKENS_FILE} is not listed in {MANIFEST_NAME}")
    tokens = parse_tokens((directory / TOKENS_FILE).read_text(encoding="utf-8"))
    if len(tokens) != manifest.vocab_size + 1:
        raise ArtifactError(
            f"{directory / TOKENS_FILE}: {len(tokens)} tokens, but the manifest's vocab_size "
            f"{manifest.vocab_size} means {manifest.vocab_size + 1} with the blank"
        )
    if tokens[-1] != BLANK:
        raise ArtifactError(f"{directory / TOKENS_FILE}: the last token must be {BLANK}")
    return Artifact(
        directory=directory,
        manifest=manifest,
        digest=sha256_file(directory / MANIFEST_NAME),
        model_path=directory / model_file,
        tokens=tokens,
    )
