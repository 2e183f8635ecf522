"""`kubescribe render` and `kubescribe operator`.

`render FILE` prints, as multi-document YAML, the objects the operator would create for the
SpeechModel manifest(s) in FILE (`-` reads stdin), with no cluster: for review and GitOps diffs.
A manifest is checked as the API server would (the CRD's schema) and as the operator does (the
pydantic model); a bad one ends with one line on stderr and exit code 2.

`operator` imports the operator process lazily (kopf is only needed there).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kubescribe.errors import KubescribeError
from kubescribe_operator import api, builders, crd, spec

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class ManifestError(KubescribeError):
    """A SpeechModel manifest that the API server or the operator would refuse."""

    exit_code = 2


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from exc


def load_manifests(text: str, source: str = "<input>") -> list[spec.SpeechModel]:
    """Parse and validate every SpeechModel document of a YAML stream."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    if not documents:
        raise ManifestError(f"{source}: no document found")
    result = []
    for index, document in enumerate(documents, start=1):
        where = f"{source} (document {index})" if len(documents) > 1 else source
        result.append(validate_manifest(document, where))
    return result


def validate_manifest(document: Any, where: str = "<input>") -> spec.SpeechModel:
    if not isinstance(document, dict):
        raise ManifestError(f"{where}: expected a mapping, got {type(document).__name__}")
    if document.get("apiVersion") != api.API_VERSION or document.get("kind") != api.KIND:
        raise ManifestError(
            f"{where}: expected apiVersion {api.API_VERSION} and kind {api.KIND}, got "
            f"{document.get('apiVersion')!r} and {document.get('kind')!r}"
        )
    errors = crd.manifest_errors(document)
    if errors:
        raise ManifestError(f"{where}: refused by the CRD schema: {'; '.join(errors)}")
    try:
        return spec.SpeechModel.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(f"{where}: {spec.format_validation_error(exc)}") from exc


def render(manifest: spec.SpeechModel, uid: str = PLACEHOLDER_UID) -> list[dict[str, Any]]:
    """The children of one SpeechModel, as the operator would first create them."""
    uid = str(manifest.metadata.get("uid") or uid)
    return builders.build_children(
        manifest.name, manifest.namespace, uid, manifest.spec, manifest.spec.model.ref()
    )


def dump_documents(objects: Sequence[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False, width=100) for obj in objects)


def render_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="kubescribe render",
        description="Print the Kubernetes objects the operator would create for a SpeechModel.",
    )
    parser.add_argument(
        "file", help="SpeechModel manifest (YAML; several documents allowed; - for stdin)"
    )
    parser.add_argument(
        "--namespace", help="namespace when the manifest has none (default: default)"
    )
    args = parser.parse_args(list(argv))
    manifests = load_manifests(_read(args.file), args.file)
    objects: list[dict[str, Any]] = []
    for manifest in manifests:
        if args.namespace and not manifest.metadata.get("namespace"):
            manifest = manifest.model_copy(
                update={"metadata": {**manifest.metadata, "namespace": args.namespace}}
            )
        objects.extend(render(manifest))
    sys.stdout.write(dump_documents(objects))
    return 0


def operator_main(argv: Sequence[str]) -> int:
    # Imported here: kopf and the kubernetes client are needed only by the operator process.
    process = importlib.import_module("kubescribe_operator.process")
    result: int = process.main(list(argv))
    return result
