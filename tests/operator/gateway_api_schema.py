"""Gateway API's CRD schemas as a validator for the tests: an object checked against its CRD's
OpenAPI schema (the structural part: types, enums, patterns, lengths, unknown fields; the CEL
rules are the API server's, checked by the live tests). The CRDs are cluster/gateway_api.py's
(fetched from the Go module proxy at the pinned version, cached, never committed)."""

from __future__ import annotations

import functools
from typing import Any

import gateway_api  # cluster/gateway_api.py
import jsonschema
import yaml
from kube_cluster import ROOT  # noqa: F401  (puts cluster/ on the path)


def _strict(node: Any) -> Any:
    """As the API server's strict field validation: an unknown field is an error."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def validator(kind: str, served: str = "v1") -> jsonschema.Draft7Validator:
    for path in sorted(gateway_api.crd_dir().glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind:
            break
    else:
        raise LookupError(f"no Gateway API CRD of kind {kind}")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == served)
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # metadata is the API server's (ObjectMeta), not described by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def errors(obj: dict[str, Any]) -> list[str]:
    """What is wrong with ``obj`` for its kind's schema ([] when valid)."""
    found = validator(obj["kind"], obj["apiVersion"].rpartition("/")[2]).iter_errors(obj)
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in found]
