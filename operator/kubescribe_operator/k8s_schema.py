"""Kubernetes' own schemas for the Kubernetes types a SpeechModel embeds (`scheduling.affinity`,
a `runtime.env` entry's `valueFrom`), so the CRD declares them field by field instead of keeping
them free-form: the API server then refuses a typo (`matchExpresions`) with its field path under
strict field validation (kubectl's default), warns and prunes it otherwise, and an empty
selector term left by pruning is refused too (`minProperties`), never a pod Pending for ever.

`k8s_schemas.json` beside this module is the generated output (`python -m
kubescribe_operator.k8s_schema --write`, from kubernetes-validate's copy of the official OpenAPI
schemas; a test compares them), so the operator image needs no schema package at run time.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

Schema = dict[str, Any]
PATH = Path(__file__).with_name("k8s_schemas.json")
K8S_SCHEMA_VERSION = "v1.37.0"
# The types embedded in the spec, by the name the CRD's field refers to.
TYPES = {
    "Affinity": "io.k8s.api.core.v1.Affinity",
    "EnvVarSource": "io.k8s.api.core.v1.EnvVarSource",
}
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
# Types whose empty value means "match nothing": refuse `{}` (what pruning leaves of a typo).
NON_EMPTY = {
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.PreferredSchedulingTerm",
}


def _type(value: Any) -> str | None:
    if isinstance(value, list):
        return next((t for t in value if t != "null"), None)
    return value if isinstance(value, str) else None


def _structural(node: Schema, defs: dict[str, Schema], name: str | None = None) -> Schema:
    ref = node.get("$ref")
    if ref is not None:
        target = ref.rsplit("/", 1)[-1]
        if target in (QUANTITY, INT_OR_STRING):
            return {"x-kubernetes-int-or-string": True}
        return _structural(defs[target], defs, target)
    out: Schema = {}
    kind = _type(node.get("type"))
    if kind is not None:
        out["type"] = kind
    if "enum" in node:
        out["enum"] = [v for v in node["enum"] if v is not None]
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        if node.get("required"):
            out["required"] = list(node["required"])
        if name in NON_EMPTY:
            out["minProperties"] = 1
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs)
    if "items" in node:
        out["items"] = _structural(node["items"], defs)
    return out


def generate(version: str = K8S_SCHEMA_VERSION) -> dict[str, Schema]:
    """The structural schema of each of TYPES, from kubernetes-validate (a dev dependency)."""
    root = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (root / f"{version}-local-strict" / "_definitions.json").read_text()
    defs: dict[str, Schema] = json.loads(text)["$defs"]
    return {short: _structural(defs[full], defs, full) for short, full in TYPES.items()}


def render() -> str:
    return json.dumps(generate(), indent=1, sort_keys=True) + "\n"


@functools.cache
def _loaded() -> dict[str, Schema]:
    data: dict[str, Schema] = json.loads(PATH.read_text())
    return data


def schema(short: str, description: str) -> Schema:
    """The CRD schema of one embedded type (a fresh copy), with a description."""
    return {**json.loads(json.dumps(_loaded()[short])), "description": description}


def _strict(node: Schema) -> Schema:
    """As the API server's strict field validation: unknown keys are errors."""
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    elif isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if out.pop("x-kubernetes-int-or-string", False):
        out["type"] = ["integer", "string"]
    return out


@functools.cache
def _validator(short: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_strict(_loaded()[short]))


def check(short: str, value: Any) -> Any:
    """``value`` if it is a valid ``short`` type with no unknown field, else ValueError naming
    each wrong field (what `kubescribe render` and the operator's parse say)."""
    errors = sorted(_validator(short).iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        raise ValueError(
            "; ".join(
                f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in errors
            )
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate k8s_schemas.json.")
    parser.add_argument("--write", action="store_true", help=f"write {PATH}")
    args = parser.parse_args(argv)
    if args.write:
        PATH.write_text(render())
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
