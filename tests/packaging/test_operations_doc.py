"""docs/operations.md against the code: every metric the parts export and every condition
reason the operator writes is documented, and the docs invent none."""

from __future__ import annotations

import re

from kubescribe_operator import canary_step, observe
from pkg_helpers import ROOT, rollout_scenarios

OPERATIONS = ROOT / "docs" / "operations.md"
OPERATOR = ROOT / "operator" / "kubescribe_operator"
# The modules that observe, decide and block (the condition reasons are written there).
ROLLOUT_SOURCE = OPERATOR / "rollout.py"
OBSERVE_SOURCE = OPERATOR / "observe.py"
RECONCILER_SOURCE = OPERATOR / "reconciler.py"
STATUS_SOURCE = OPERATOR / "status.py"  # the conditions every part shares (issue 22.6)
CANARY_SOURCE = OPERATOR / "canary_step.py"  # rollout.strategy Canary (issue 19.3)
GATE_SOURCE = OPERATOR / "quality_gate.py"  # its verdict's reason, in the rollout's messages


def documented_reasons() -> set[str]:
    text = OPERATIONS.read_text()
    table = text[text.index("## Troubleshooting by condition reason") :]
    table = table[: table.index("\n## ")] if "\n## " in table else table
    return set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))


def written_reasons() -> set[str]:
    """Condition reasons of the statuses the rollout decision computes, and every failure
    reason it can classify a pod or a Deployment with."""
    reasons = {
        condition["reason"]
        for _, obj, _ in rollout_scenarios()
        for condition in obj["status"]["conditions"]
    }
    source = ROLLOUT_SOURCE.read_text() + OBSERVE_SOURCE.read_text() + STATUS_SOURCE.read_text()
    reasons |= set(observe.BAD_WAITING_REASONS.values())
    reasons |= {*canary_step.CONDITION_REASONS.values(), "CanaryAborted"}
    reasons |= set(re.findall(r'reason="(\w+)"', source))
    reasons |= set(re.findall(r'Progress\.FAILING, "(\w+)"', source))
    # Reconciles stopped before any decision (a bad spec, a name conflict).
    reasons |= set(re.findall(r'_block\([^)]*?"(\w+)"', RECONCILER_SOURCE.read_text()))
    return reasons


def test_every_reason_the_operator_writes_is_documented() -> None:
    missing = written_reasons() - documented_reasons()
    assert not missing, f"docs/operations.md does not explain {sorted(missing)}"


def test_documented_reasons_exist_in_the_operator() -> None:
    source = "".join(
        path.read_text()
        for path in (
            ROLLOUT_SOURCE,
            OBSERVE_SOURCE,
            RECONCILER_SOURCE,
            STATUS_SOURCE,
            CANARY_SOURCE,
            GATE_SOURCE,
        )
    )
    invented = {reason for reason in documented_reasons() if f'"{reason}"' not in source}
    assert not invented, f"docs/operations.md documents unknown reasons {sorted(invented)}"


def test_scenarios_cover_rollback_and_failure_reasons() -> None:
    assert {"RolledBack", "RollingBack", "RolloutFailed", "NoReplicaAvailable"} <= written_reasons()
    assert {"InvalidSpec", "ChildConflict"} <= written_reasons()


def test_every_exported_metric_is_documented() -> None:
    from kubescribe_operator import metrics as operator_metrics
    from kubescribe_runtime.metrics import Metrics
    from prometheus_client.metrics import MetricWrapperBase

    collectors = [Metrics().registry] + [
        value for value in vars(operator_metrics).values() if isinstance(value, MetricWrapperBase)
    ]
    text = OPERATIONS.read_text()
    for collector in collectors:
        for family in collector.collect():
            name = family.name + ("_total" if family.type == "counter" else "")
            assert f"`{name}`" in text, f"docs/operations.md does not list {name}"


def paragraphs() -> list[str]:
    return [" ".join(block.split()) for block in OPERATIONS.read_text().split("\n\n")]


def test_models_outside_the_watched_namespaces_are_ignored_not_forbidden() -> None:
    # The operator never even lists them: nothing is refused, nothing is logged.
    about = [text for text in paragraphs() if "watchNamespaces" in text]
    assert about
    for text in about:
        sentences = [s for s in re.split(r"(?<=[.:?])\s", text) if "watchNamespaces" in s]
        for sentence in sentences:
            assert "forbidden" not in sentence, sentence
    assert any("ignored" in text for text in about)


def test_operator_logs_are_read_from_the_active_replica() -> None:
    # With replicas > 1, `logs deployment/...` shows whichever pod kubectl picks: usually a
    # paused one. The guide finds the acting replica in the peering object instead.
    text = OPERATIONS.read_text()
    targets = re.findall(r"kubectl -n kubescribe-system logs ([^\s`]+)", text)
    assert targets and set(targets) == {"POD"}, targets
    commands = re.findall(r"^kubectl [^\n]*$", text, re.MULTILINE)
    assert any("get clusterkopfpeering" in command for command in commands)
