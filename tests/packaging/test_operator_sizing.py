"""Issue 22.11: the operator's memory by fleet size. docs/operations.md's sizing table against
the measured figures of docs/benchmarks.md ("Operator at scale": peak RSS at 200 and at 1000
SpeechModels) and the chart's defaults."""

from __future__ import annotations

import re

import yaml
from pkg_helpers import CHART, ROOT

BENCHMARKS = ROOT / "docs" / "benchmarks.md"
OPERATIONS = ROOT / "docs" / "operations.md"
UNITS = {"Mi": 2**20, "Gi": 2**30}
# Above the measured peak: the limit leaves room for bursts (a mass rollout, a relist).
LIMIT_HEADROOM = 1.25


def mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit] / 2**20


def measured() -> tuple[tuple[int, float], tuple[int, float]]:
    """(models, peak RSS in MiB) of the benchmark's two phases."""
    text = BENCHMARKS.read_text()
    section = text[text.index("## Operator at scale") :]
    small = re.search(r"operator peak RSS \(VmHWM\) with (\d+) \| (\d+) MB", section)
    large = re.search(r"operator peak RSS \(VmHWM\) with (\d+)\*\* \| \*\*(\d+) MB", section)
    assert small and large, "docs/benchmarks.md lost its operator RSS rows"
    to_mib = 1e6 / 2**20
    return (
        (int(small.group(1)), int(small.group(2)) * to_mib),
        (int(large.group(1)), int(large.group(2)) * to_mib),
    )


def expected_rss(models: int) -> float:
    """Linear in the fleet between (and beyond) the two measured points."""
    (n1, rss1), (n2, rss2) = measured()
    return rss1 + (rss2 - rss1) * (models - n1) / (n2 - n1)


def sizing_rows() -> list[tuple[int, str, str, bool]]:
    """(up to N models, memory request, memory limit, is the chart default)."""
    text = OPERATIONS.read_text()
    table = text[text.index("<!-- operator-sizing -->") :]
    rows = re.findall(r"^\| up to (\d+)( \(chart default\))? \| (\S+) \| (\S+) \|", table, re.M)
    return [(int(n), request, limit, bool(default)) for n, default, request, limit in rows]


def test_the_table_covers_the_measured_fleet() -> None:
    rows = sizing_rows()
    assert len(rows) >= 3 and sum(default for *_, default in rows) == 1
    assert max(n for n, *_ in rows) >= measured()[1][0]


def test_every_row_fits_its_fleet() -> None:
    for models, request, limit, _ in sizing_rows():
        need = expected_rss(models)
        assert mib(request) >= need, f"{models} models: request {request} < {need:.0f} MiB"
        assert mib(limit) >= LIMIT_HEADROOM * need, f"{models} models: limit {limit}"


def test_the_chart_default_is_the_documented_row() -> None:
    # The chart's 256Mi limit held about 300 models at the measured rate, and no doc said so.
    resources = yaml.safe_load((CHART / "values.yaml").read_text())["resources"]
    (models, request, limit, _) = next(row for row in sizing_rows() if row[3])
    assert resources["requests"]["memory"] == request
    assert resources["limits"]["memory"] == limit
    assert mib(limit) >= LIMIT_HEADROOM * expected_rss(models)
