"""Shared helpers of the packaging tests: the chart rendered by real Helm (helm-python-sdk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubescribe"
RELEASE = "kubescribe"
NAMESPACE = "kubescribe-system"

Objects = list[dict[str, Any]]


def render_chart(values: dict[str, Any] | None = None) -> tuple[Objects, str]:
    """`helm template` (Helm's Go SDK, offline): the objects, and the rendered NOTES.txt."""
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: Objects = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects, notes


def by_kind(objects: Objects, kind: str) -> Objects:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: Objects, kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]
