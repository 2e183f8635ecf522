"""Prometheus alert rules, the adapter rules and the Grafana dashboard against the real metrics.

Every metric name they query must be one that the runtime's or the operator's prometheus-client
registry exports; the rules are checked and unit-tested by the real promtool (Debian's
prometheus package, installed by `make test`'s `tools` prerequisite).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pkg_helpers import ROOT, by_kind, exported_names, one, promql_metric_names, render_chart
from prometheus_client.parser import text_string_to_metric_families

PROMETHEUS = ROOT / "examples" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ADAPTER = PROMETHEUS / "adapter-rules.yaml"
DASHBOARD = ROOT / "examples" / "grafana" / "kubescribe-dashboard.json"
ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
OPERATOR_ALERT_TESTS = Path(__file__).with_name("operator_alerts_test.yaml")
SERVICE_MONITOR = {"metrics": {"serviceMonitor": {"enabled": True}}}
# Labels Prometheus adds to every scraped series (the Prometheus Operator's ServiceMonitors).
TARGET_LABELS = {"namespace", "service", "pod", "job", "instance", "endpoint", "container"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: `make tools` installs Debian's prometheus package"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def runtime_metrics() -> set[str]:
    from kubescribe_runtime.metrics import Metrics

    return exported_names(Metrics().registry)


def operator_metrics() -> set[str]:
    # The operator registers its metrics on prometheus-client's global registry (next to the
    # process and GC collectors): take the collectors its metrics module defines.
    from kubescribe_operator import metrics
    from prometheus_client.metrics import MetricWrapperBase

    collectors = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert collectors, "kubescribe_operator.metrics defines no metric"
    return exported_names(collectors)


def exported() -> set[str]:
    return runtime_metrics() | operator_metrics()


def chart_alert_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The groups of the chart's PrometheusRule (the operator's alerts)."""
    groups: list[dict[str, Any]] = one(
        render_chart(values or SERVICE_MONITOR)[0], "PrometheusRule"
    )["spec"]["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    """The runtime's (examples/) and the operator's (the chart's) alert rules."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"] + chart_alert_groups()
    return [rule for group in groups for rule in group["rules"]]


def adapter_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]
    return rules


def panel_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def dashboard_queries() -> list[str]:
    """The panels' queries and the metric selectors of the template variables."""
    board = json.loads(DASHBOARD.read_text())
    queries = panel_queries()
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            queries.append(text.removeprefix("label_values(").rsplit(",", 1)[0])
    return queries


# ---------------------------------------------------------------- the name extraction itself


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (namespace) (rate(a_total{code=~"5.."}[5m])) / b', {"a_total", "b"}),
        ("histogram_quantile(0.95, sum(rate(x_bucket[$__rate_interval])) by (le))", {"x_bucket"}),
        ("count by (ns) (count by (ns, version) (info)) > 1", {"info"}),
        ("max(up) == 0 and on (pod) ready offset 5m", {"up", "ready"}),
        ('absent(kubescribe_x{job="a"}) or vector(1e3)', {"kubescribe_x"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_exported_names_know_the_operator_series() -> None:
    names = operator_metrics()
    assert "kubescribe_operator_rollouts_total" in names
    assert "kubescribe_operator_reconcile_duration_seconds_count" in names
    assert all(name.startswith("kubescribe_operator_") for name in names)


def test_exported_names_know_the_runtime_series() -> None:
    names = runtime_metrics()
    assert {
        "kubescribe_requests_total",
        "kubescribe_request_duration_seconds_bucket",
        "kubescribe_requests_in_flight",
        "kubescribe_model_info",
    } <= names
    assert "kubescribe_requests" not in names  # a counter is only exported with _total


# ------------------------------------------------------------------------------ alert rules


def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def write_chart_rules(directory: Path) -> Path:
    """The chart's rules and their unit tests side by side, as the tests file expects."""
    (directory / "operator-rules.yaml").write_text(yaml.safe_dump({"groups": chart_alert_groups()}))
    tests = directory / OPERATOR_ALERT_TESTS.name
    tests.write_text(OPERATOR_ALERT_TESTS.read_text())
    return tests


def test_promtool_checks_and_unit_tests_the_chart_alert_rules(tmp_path: Path) -> None:
    tests = write_chart_rules(tmp_path)
    result = promtool("check", "rules", str(tmp_path / "operator-rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "alerts"),
    [
        ({}, False),
        (SERVICE_MONITOR, True),
        ({"metrics": {"serviceMonitor": {"enabled": True, "alerts": False}}}, False),
        ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, False),
    ],
    ids=["defaults", "service-monitor", "alerts-off", "metrics-off"],
)
def test_operator_alerts_come_with_the_service_monitor(
    values: dict[str, Any], alerts: bool
) -> None:
    # "Operator absent" where nothing scrapes the operator would fire for ever.
    objects = render_chart(values)[0]
    assert bool(by_kind(objects, "PrometheusRule")) == alerts
    if alerts:
        assert by_kind(objects, "ServiceMonitor")
    examples = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
                for rule in group["rules"]}  # fmt: skip
    assert not {name for name in examples if name.startswith("KubescribeOperator")}


def test_operator_alerts_select_the_series_of_their_own_release() -> None:
    # What the Prometheus Operator labels the scraped series with: the Service's namespace and
    # name. Two releases alert apart; the PrometheusRule carries the ServiceMonitor's labels.
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
    objects = render_chart(values)[0]
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    selector = (
        f'namespace="{service["metadata"]["namespace"]}",service="{service["metadata"]["name"]}"'
    )
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert selector in alert["expr"], alert["alert"]


# ------------------------------------------------- counters the alerts read start at zero

Selector = tuple[str, list[tuple[str, str, str]]]  # (metric, [(label, operator, value)])


def counter_selectors(expr: str) -> list[Selector]:
    """The counter selectors of an expression that match on labels the process exports."""
    found = []
    for name, matchers in re.findall(r"(\w+_total)\{([^}]*)\}", expr):
        parsed = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers)
        own = [m for m in parsed if m[0] not in TARGET_LABELS]
        if own:
            found.append((name, own))
    return found


def matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, operator, value in matchers:
        have = labels.get(label, "")
        hit = re.fullmatch(value, have) is not None if "~" in operator else have == value
        if hit == operator.startswith("!"):
            return False
    return True


def fresh_samples(module: str) -> list[tuple[str, dict[str, str], float]]:
    """The series a process exports right after start, before it served or reconciled."""
    code = {
        "operator": "import kubescribe_operator.metrics\n"
        "from prometheus_client import generate_latest\n"
        "print(generate_latest().decode())",
        "runtime": "from kubescribe_runtime.metrics import Metrics\n"
        "print(Metrics().exposition().decode())",
    }[module]
    import sys

    text = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_counter_selectors_are_read_from_the_expressions() -> None:
    expr = (
        'sum(rate(a_total{namespace="x",code=~"5..",code!="503"}[5m])) / rate(b_total{pod="p"}[1m])'
    )
    assert counter_selectors(expr) == [("a_total", [("code", "=~", "5.."), ("code", "!=", "503")])]
    assert matches({"code": "504"}, [("code", "=~", "5.."), ("code", "!=", "503")])
    assert not matches({"code": "503"}, [("code", "=~", "5.."), ("code", "!=", "503")])
    assert not matches({"code": "200"}, [("code", "=~", "5..")])


def test_every_counter_an_alert_selects_exists_at_zero_from_the_start() -> None:
    # rate() and increase() measure steps between samples: a series that appears at 1 (the
    # first failed rollout of an operator process, the first 5xx of a pod) has no step, and the
    # alert misses it. So the processes export at 0, from the start, every series the alerts
    # select by label value.
    samples = fresh_samples("operator") + fresh_samples("runtime")
    checked = 0
    for rule in alert_rules():
        for name, matchers in counter_selectors(rule["expr"]):
            found = [
                (labels, value)
                for sample, labels, value in samples
                if sample == name and matches(labels, matchers)
            ]
            assert found, f"{rule['alert']}: no {name}{{{matchers}}} series at start"
            assert all(value == 0 for _, value in found)
            checked += 1
    assert checked >= 3  # 5xx, 429, failed/rolled-back rollouts


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: sum(rate(x[5m])\n")
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_every_alert_queries_exported_metrics() -> None:
    names = exported()
    for rule in alert_rules():
        used = promql_metric_names(rule["expr"])
        assert used, f"{rule['alert']} queries no metric"
        assert used <= names, f"{rule['alert']}: {sorted(used - names)} are not exported"


def test_every_alert_has_severity_summary_and_a_runbook_entry() -> None:
    operations = (ROOT / "docs" / "operations.md").read_text()
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["alert"] in operations, f"docs/operations.md does not explain {rule['alert']}"


# ----------------------------------------------------------------------- adapter rules


def test_adapter_serves_the_metric_the_operator_scales_on() -> None:
    from kubescribe_operator.spec import AutoscalingSpec

    default = AutoscalingSpec.model_fields["requests_in_flight_metric"].default
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert default in served


def test_adapter_rules_select_exported_per_pod_series() -> None:
    names = exported()
    for rule in adapter_rules():
        series = promql_metric_names(rule["seriesQuery"])
        assert series and series <= names, series
        overrides = rule["resources"]["overrides"]
        assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}


def test_adapter_metrics_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, rule in enumerate(adapter_rules()):
        series = next(iter(promql_metric_names(rule["seriesQuery"])))
        expr = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="speech",pod=~"demo-.*"')
            .replace("<<.GroupBy>>", "pod")
        )
        rules.append({"record": f"adapter:rule{index}", "expr": expr})
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------- dashboard


def test_dashboard_queries_only_exported_metrics() -> None:
    names = exported()
    queries = dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        used = promql_metric_names(query)
        assert used, f"queries no metric: {query}"
        assert used <= names, f"{sorted(used - names)} are not exported: {query}"


def test_dashboard_covers_runtime_and_operator() -> None:
    used = set().union(*(promql_metric_names(query) for query in dashboard_queries()))
    assert used & runtime_metrics() and used & operator_metrics()
    # Every runtime metric family has a panel.
    families = {re.sub(r"_(bucket|sum|count|total)$", "", name) for name in used}
    for family in (
        "kubescribe_requests",
        "kubescribe_request_duration_seconds",
        "kubescribe_audio_duration_seconds",
        "kubescribe_real_time_factor_ratio",
        "kubescribe_batch_size",
        "kubescribe_queued_windows",
        "kubescribe_queue_wait_seconds",
        "kubescribe_batch_inference_seconds",
        "kubescribe_requests_refused",
        "kubescribe_audio_processed_seconds",
        "kubescribe_windows_skipped",
        "kubescribe_windows_cancelled",
        "process_resident_memory_bytes",
        "kubescribe_requests_in_flight",
        "kubescribe_model_info",
    ):
        assert family in families, family
    # ... and so does every realtime-session family the runtime exports, present or future.
    realtime = {
        re.sub(r"_(bucket|sum|count|total|created)$", "", name)
        for name in runtime_metrics()
        if name.startswith("kubescribe_realtime_")
    }
    assert len(realtime) >= 7
    assert realtime <= families, sorted(realtime - families)


def test_alerts_watch_the_realtime_sessions() -> None:
    used = set().union(*(promql_metric_names(rule["expr"]) for rule in alert_rules()))
    assert {
        "kubescribe_realtime_partial_latency_seconds_bucket",
        "kubescribe_realtime_sessions_total",
    } <= used


def test_dashboard_is_importable_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"] for variable in board["templating"]["list"]}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            for used in _variables(target.get("expr", "")):
                assert used in variables | {"__rate_interval", "__interval"}, used


def _variables(expr: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)", expr))


def test_runtime_panels_follow_the_namespace_and_service_variables() -> None:
    runtime = runtime_metrics()
    for query in panel_queries():
        if promql_metric_names(query) & runtime:
            # (process_* too: the runtime's registry holds the process collector)
            selectors = re.findall(r"(?:kubescribe|process)_\w+\{([^}]*)\}", query)
            assert selectors, query
            for selector in selectors:
                assert 'namespace=~"$namespace"' in selector, query
                assert 'service=~"$service"' in selector, query


# ------------------------------------------ autoscaling on requests in flight, end to end


def kube_prometheus_stack() -> tuple[str, str]:
    """(release, namespace) of the kube-prometheus-stack the user guide installs."""
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    found = re.search(
        r"helm upgrade --install (\S+) prometheus-community/kube-prometheus-stack[^\n]*\n?"
        r"\s*--namespace (\S+)",
        guide.replace("\\\n", " "),
    )
    assert found, "docs/user-guide.md does not install kube-prometheus-stack"
    return found.group(1), found.group(2)


def example_speechmodels() -> list[dict[str, Any]]:
    paths = sorted((ROOT / "examples" / "speechmodels").glob("*.yaml"))
    paths += sorted((ROOT / "examples" / "gitops").rglob("*.yaml"))
    docs = [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc["kind"] == "SpeechModel"]


def test_adapter_asks_the_prometheus_the_docs_install() -> None:
    release, namespace = kube_prometheus_stack()
    prometheus = yaml.safe_load(ADAPTER.read_text())["prometheus"]
    # kube-prometheus-stack's Service for its Prometheus: "<release>-prometheus" when the release
    # is named after the chart (a longer name is shortened by the chart's fullname template).
    assert release == "kube-prometheus-stack"
    assert prometheus["url"] == f"http://{release}-prometheus.{namespace}.svc"
    assert prometheus["port"] == 9090


def test_example_service_monitors_carry_the_label_kube_prometheus_stack_selects() -> None:
    # Its Prometheus selects ServiceMonitors by `release: <its release>` unless told otherwise.
    from kubescribe_operator import builders
    from kubescribe_operator.spec import SpeechModelSpec

    release, _ = kube_prometheus_stack()
    monitored = 0
    for model in example_speechmodels():
        spec = SpeechModelSpec.model_validate(model["spec"])
        monitor = builders.build_service_monitor(model["metadata"]["name"], "speech", "uid", spec)
        if monitor is not None:
            assert monitor["metadata"]["labels"].get("release") == release, model["metadata"]
            monitored += 1
    assert monitored


def test_the_hpa_gets_a_value_from_the_adapter_rule(tmp_path: Path) -> None:
    # The example that scales on requests in flight: the HPA the operator builds asks the
    # custom-metrics API for a Pods metric; the adapter answers it with its rule's query over
    # the series Prometheus scraped from the pods (labels from the ServiceMonitor: namespace,
    # service, pod). promtool evaluates that very query, as the adapter would send it for the
    # HPA's pods, and the HPA gets one value per pod.
    from kubescribe_operator import builders
    from kubescribe_operator.spec import SpeechModelSpec

    model = next(
        m for m in example_speechmodels() if m["metadata"]["name"] == "conformer-en-inflight"
    )
    name, namespace = model["metadata"]["name"], model["metadata"]["namespace"]
    hpa = builders.build_hpa(name, namespace, "uid", SpeechModelSpec.model_validate(model["spec"]))
    assert hpa is not None
    pods_metric = next(m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    metric = pods_metric["metric"]["name"]
    rule = next(r for r in adapter_rules() if r["name"]["as"] == metric)
    series = next(iter(promql_metric_names(rule["seriesQuery"])))
    pods = [f"{name}-7d9c-a", f"{name}-7d9c-b"]
    expr = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series)
        .replace("<<.LabelMatchers>>", f'namespace="{namespace}",pod=~"{"|".join(pods)}"')
        .replace("<<.GroupBy>>", "pod")
    )
    (tmp_path / "adapter.yaml").write_text(
        yaml.safe_dump(
            {"groups": [{"name": "adapter", "rules": [{"record": "hpa:value", "expr": expr}]}]}
        )
    )

    def scraped(pod: str, ns: str, values: str) -> dict[str, str]:
        return {
            "series": f'{series}{{namespace="{ns}",service="{name}",pod="{pod}"}}',
            "values": values,
        }

    tests = {
        "rule_files": ["adapter.yaml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    scraped(pods[0], namespace, "3x8"),
                    scraped(pods[1], namespace, "10x8"),
                    scraped(f"{name}-7d9c-a", "other", "50x8"),  # another namespace's pod
                ],
                "promql_expr_test": [
                    {
                        "expr": "hpa:value",
                        "eval_time": "2m",
                        "exp_samples": [
                            {"labels": f'hpa:value{{pod="{pods[0]}"}}', "value": 3},
                            {"labels": f'hpa:value{{pod="{pods[1]}"}}', "value": 10},
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "adapter_test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(tmp_path / "adapter_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The HPA compares the pods' average with its target: 6.5 in flight per pod against 8.
    assert pods_metric["target"] == {"type": "AverageValue", "averageValue": "8"}
