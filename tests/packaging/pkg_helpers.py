"""Shared helpers of the packaging tests: the chart rendered by real Helm (helm-python-sdk)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubescribe"
RELEASE = "kubescribe"
NAMESPACE = "kubescribe-system"

Objects = list[dict[str, Any]]


def render_chart(
    values: dict[str, Any] | None = None, *, release: str = RELEASE
) -> tuple[Objects, str]:
    """`helm template` (Helm's Go SDK, offline): the objects (test hooks included), and the
    rendered NOTES.txt."""
    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values or {})
        manifests = chart.render(values or {}, name=release, namespace=NAMESPACE, is_install=True)
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


# --------------------------------------------------------------------------- metric names

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def exported_names(registry: Any) -> set[str]:
    """Every series name a prometheus-client registry (or list of collectors) exposes."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    names: set[str] = set()
    collectors = registry if isinstance(registry, list) else [registry]
    families = [family for collector in collectors for family in collector.collect()]
    for family in families:
        names |= {family.name + suffix for suffix in suffixes[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's $variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS:
            continue
        names.add(name)
    return names


# ------------------------------------------------------ statuses the operator really writes


def rollout_scenarios() -> list[tuple[str, dict[str, Any], str]]:
    """(what happens, the SpeechModel as Argo CD would see it, the health Argo CD should show),
    with every status computed by the operator's own rollout decision (`rollout.decide`)."""
    from datetime import UTC, datetime, timedelta

    from kubescribe_operator.api import ModelRef
    from kubescribe_operator.observe import Observed, PodProblem
    from kubescribe_operator.rollout import decide
    from kubescribe_operator.spec import SpeechModelSpec
    from kubescribe_operator.status import SpeechModelStatus

    start = datetime(2026, 1, 1, tzinfo=UTC)
    scenarios: list[tuple[str, dict[str, Any], str]] = []

    def spec(version: str, auto_rollback: bool = True) -> SpeechModelSpec:
        return SpeechModelSpec.model_validate(
            {
                "model": {"uri": f"s3://models/demo/{version}", "version": version},
                "replicas": 2,
                "rollout": {"autoRollback": auto_rollback},
            }
        )

    def seen(
        ref: ModelRef,
        updated: int = 2,
        available: int = 2,
        problem: str | None = None,
        deadline: bool = False,
    ) -> Observed:
        problems = {}
        if problem:
            found = PodProblem(pod="demo-x", container="runtime", reason=problem, message=problem)
            problems = {ref.digest(): (found,)}
        return Observed(
            deployment_exists=True,
            template_ref=ref.digest(),
            template_observed=True,
            desired_replicas=2,
            replicas=2,
            updated_replicas=updated,
            ready_replicas=available,
            available_replicas=available,
            deadline_exceeded=deadline,
            deadline_message="ReplicaSet has timed out progressing." if deadline else "",
            problems_by_ref=problems,
        )

    class Model:
        def __init__(self, version: str, auto_rollback: bool = True) -> None:
            self.spec = spec(version, auto_rollback)
            self.generation = 1
            self.status: SpeechModelStatus | None = None
            self.clock = start

        def change(self, version: str) -> None:
            self.spec = spec(version, self.spec.rollout.auto_rollback)
            self.generation += 1

        def step(self, what: str, observed: Observed, health: str) -> ModelRef:
            self.clock += timedelta(seconds=30)
            decision = decide(
                self.spec, self.generation, self.status, observed, self.clock, name="demo"
            )
            self.status = SpeechModelStatus.model_validate(decision.status)
            self.record(what, health)
            return decision.model_ref

        def block(self, what: str, reason: str, health: str) -> None:
            # What the handlers write when they cannot act at all (status.blocked_status).
            from kubescribe_operator.status import blocked_status

            self.clock += timedelta(seconds=30)
            prev = self.status.dump() if self.status else {}
            raw = blocked_status(prev, self.generation, reason, f"{reason} details", self.clock)
            self.status = SpeechModelStatus.model_validate(raw)
            self.record(what, health)

        def record(self, what: str, health: str) -> None:
            status = self.status.model_dump(by_alias=True, exclude_none=True, mode="json")
            obj = {
                "apiVersion": "kubescribe.io/v1alpha1",
                "kind": "SpeechModel",
                "metadata": {"name": "demo", "namespace": "speech", "generation": self.generation},
                "spec": self.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
                "status": status,
            }
            scenarios.append((what, obj, health))

    # A first deployment that succeeds, then a new version that is rolled back.
    model = Model("1.0.0")
    v1 = model.spec.model.ref()
    model.step("first deployment, no Deployment yet", Observed(), "Progressing")
    model.step("first deployment, pods starting", seen(v1, updated=2, available=0), "Progressing")
    model.step("first deployment serving", seen(v1), "Healthy")
    model.change("1.1.0")
    model.record("new version pushed, operator has not seen it", "Progressing")
    v2 = model.spec.model.ref()
    model.step("new version, Deployment not updated yet", seen(v1), "Progressing")
    model.step("new version rolling", seen(v2, updated=1, available=2), "Progressing")
    back = model.step(
        "new version crash-loops: roll back", seen(v2, 1, 2, "CrashLoopBackOff"), "Degraded"
    )
    assert back == v1, "the operator was expected to roll back to 1.0.0"
    model.step("rolled back, old version serving again", seen(v1), "Degraded")
    model.change("1.2.0")
    v3 = model.spec.model.ref()
    model.step("fixed version rolling", seen(v3, updated=1, available=2), "Progressing")
    model.step("fixed version serving", seen(v3), "Healthy")
    model.step("serving, then pods crash-loop", seen(v3, 2, 1, "CrashLoopBackOff"), "Degraded")
    model.step("serving, pods lost", seen(v3, updated=2, available=0), "Degraded")
    model.change("1.3.0")
    model.block(
        "new version's Deployment name taken by a foreign object", "ChildConflict", "Degraded"
    )
    model = Model("1.0.0")
    model.block("a spec the operator refuses", "InvalidSpec", "Degraded")

    # Failures of each kind, without a rollback to fall back on.
    for problem in ("InitContainerFailed", "ImagePullFailed", "ContainerConfigError", None):
        model = Model("1.0.0", auto_rollback=False)
        ref = model.spec.model.ref()
        model.step("first deployment, pods starting", seen(ref, 2, 0), "Progressing")
        what = f"first deployment fails: {problem or 'progress deadline exceeded'}"
        model.step(what, seen(ref, 2, 0, problem, deadline=problem is None), "Degraded")
    return scenarios
