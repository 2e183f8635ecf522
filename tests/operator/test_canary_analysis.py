"""The canary analysis' pure core (operator/kubescribe_operator/canary_analysis.py) on real
exposition text: the runtime's own metrics registry (kubescribe_runtime.metrics.Metrics) observes
requests as its routes do, and `generate_latest` renders it, so renaming a runtime metric breaks
these tests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
from kubescribe_operator.canary_analysis import (
    ExpositionError,
    MetricsSample,
    PodSample,
    histogram_quantile,
    judge,
    le_key,
    parse_exposition,
    sample_of,
)
from kubescribe_operator.spec_traffic import CanaryAnalysis
from kubescribe_runtime.metrics import Metrics
from prometheus_client import generate_latest


@dataclass
class Traffic:
    """Requests one pod answers: (status code, latency s, real-time factor or None) each."""

    requests: list[tuple[str, float, float | None]] = field(default_factory=list)

    def add(self, n: int, code: str = "200", latency: float = 0.3, rtf: float | None = 0.05):
        self.requests += [(code, latency, rtf if code == "200" else None)] * n
        return self


def observe(metrics: Metrics, traffic: Traffic) -> None:
    # As runtime/kubescribe_runtime/routes.py records a transcription request.
    for code, latency, rtf in traffic.requests:
        metrics.requests.labels(code).inc()
        metrics.latency.labels(code).observe(latency)
        if rtf is not None:
            metrics.audio_duration.observe(6.0)
            metrics.real_time_factor.observe(rtf)


def text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def step(before: Traffic, during: Traffic, pods: int = 1) -> tuple[MetricsSample, MetricsSample]:
    """Samples of `pods` pods at a step's start (after `before`) and now (after `during`)."""
    registries = [Metrics() for _ in range(pods)]
    for metrics in registries:
        observe(metrics, before)
    start = sample_of({f"pod-{i}": text(m) for i, m in enumerate(registries)})
    for metrics in registries:
        observe(metrics, during)
    return start, sample_of({f"pod-{i}": text(m) for i, m in enumerate(registries)})


DEFAULTS = CanaryAnalysis()
STRICT = CanaryAnalysis(
    max_error_ratio=0.05, max_p95_latency_seconds=1.0, max_real_time_factor=0.2, min_requests=20
)


@pytest.mark.parametrize(
    ("thresholds", "before", "during", "ok", "requests", "errors", "words"),
    [
        # A healthy step: the requests before it do not count.
        (STRICT, Traffic().add(500, "500"), Traffic().add(40), True, 40, 0, "within thresholds"),
        # 12 of 40 answered 500: 0.3 > 0.05.
        (
            DEFAULTS,
            Traffic().add(10),
            Traffic().add(28).add(12, "500", latency=0.02),
            False,
            40,
            12,
            "error ratio 0.3 (12 of 40 requests answered 5xx) above maxErrorRatio 0.05",
        ),
        # Every 5xx counts (a 504 timeout too); 4xx and 429 are the client's or shedding.
        (DEFAULTS, Traffic(), Traffic().add(95).add(5, "429").add(2, "504"), True, 102, 2, ""),
        (DEFAULTS, Traffic(), Traffic().add(90).add(4, "400").add(6, "503"), False, 100, 6, ""),
        # Slow: 10 % of the requests took 20 s, so p95 falls in the (10, 30] bucket.
        (
            STRICT,
            Traffic(),
            Traffic().add(36).add(4, latency=20.0),
            False,
            40,
            0,
            "p95 latency 20 s above maxP95LatencySeconds 1",
        ),
        # Slower than the audio: p95 real-time factor in (1, 2].
        (
            STRICT,
            Traffic(),
            Traffic().add(30).add(10, rtf=1.5),
            False,
            40,
            0,
            "p95 real-time factor 1.8 above maxRealTimeFactor 0.2",
        ),
        # Unset latency and real-time factor thresholds are not judged.
        (DEFAULTS, Traffic(), Traffic().add(30).add(10, latency=200.0, rtf=50.0), True, 40, 0, ""),
        # Too few requests is not a breach, and says so...
        (
            STRICT,
            Traffic(),
            Traffic().add(5),
            True,
            5,
            0,
            "(only 5 requests, fewer than minRequests 20: judged on what it saw)",
        ),
        # ...but what it saw is judged.
        (STRICT, Traffic(), Traffic().add(3).add(2, "500"), False, 5, 2, "fewer than minRequests"),
        (STRICT, Traffic().add(7), Traffic(), True, 0, 0, "no requests reached the canary yet"),
    ],
)
def test_a_step_is_judged_on_what_the_canary_counted_during_it(
    thresholds: CanaryAnalysis,
    before: Traffic,
    during: Traffic,
    ok: bool,
    requests: int,
    errors: int,
    words: str,
) -> None:
    verdict = judge(thresholds, *step(before, during))
    assert (verdict.ok, verdict.figures.requests, verdict.figures.errors) == (ok, requests, errors)
    assert words in verdict.reason
    assert verdict.enough_requests == (requests >= thresholds.min_requests)
    if requests:
        assert verdict.figures.error_ratio == pytest.approx(errors / requests)


def test_the_figures_sum_the_canary_pods() -> None:
    before, after = step(Traffic().add(3), Traffic().add(9).add(1, "500"), pods=3)
    verdict = judge(DEFAULTS, before, after)
    assert (verdict.figures.requests, verdict.figures.errors) == (30, 3)
    assert not verdict.ok


def test_p95_is_prometheus_histogram_quantile_of_the_bucket_deltas() -> None:
    # 100 requests: 90 in (0.25, 0.5], 10 in (1, 2.5]. Rank 95 is the 5th of the 10 in
    # (1, 2.5]: 1 + 1.5 * 5/10 = 1.75, as histogram_quantile(0.95, ...) interpolates.
    before, after = step(Traffic().add(50, latency=100.0), Traffic().add(90).add(10, latency=2))
    verdict = judge(DEFAULTS, before, after)
    assert verdict.figures.p95_latency_s == pytest.approx(1.75)


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({"0.1": 0, "1": 10, "+Inf": 10}, 0.1 + 0.9 * 9.5 / 10),
        ({"0.1": 10, "1": 10, "+Inf": 10}, 0.095),  # in the first bucket: from 0
        ({"0.1": 0, "1": 0, "+Inf": 4}, 1.0),  # in +Inf: the highest finite bound
        ({"0.1": 0, "1": 0, "+Inf": 0}, None),  # no observations
        ({"0.1": 3}, None),  # no +Inf bucket
        ({"1.0": 5, "0.5": 5, "+Inf": 5}, 0.475),  # order of the keys does not matter
    ],
)
def test_histogram_quantile(buckets: dict[str, float], expected: float | None) -> None:
    result = histogram_quantile(0.95, {le_key(le): n for le, n in buckets.items()})
    assert result == (None if expected is None else pytest.approx(expected))


def test_a_restarted_pod_counts_from_zero() -> None:
    # pod-0 answered 100 requests, then its process restarted and answered 10, 4 of them 500.
    old, new = Metrics(), Metrics()
    observe(old, Traffic().add(100))
    observe(new, Traffic().add(6).add(4, "500"))
    before, after = sample_of({"pod-0": text(old)}), sample_of({"pod-0": text(new)})
    verdict = judge(DEFAULTS, before, after)
    assert (verdict.figures.requests, verdict.figures.errors) == (10, 4)
    assert not verdict.ok


def test_a_restart_is_seen_by_the_process_start_time_even_when_counters_grew_past() -> None:
    # Restarted and already past its old counts: only the start time tells.
    old, new = Metrics(), Metrics()
    observe(old, Traffic().add(5))
    observe(new, Traffic().add(20).add(3, "500"))
    then = parse_exposition(text(old))
    assert then.started is not None  # the runtime exports process_start_time_seconds
    before = MetricsSample(pods={"pod-0": then.model_copy(update={"started": then.started - 60})})
    after = sample_of({"pod-0": text(new)})
    assert judge(DEFAULTS, before, after).figures.requests == 23
    same_process = MetricsSample(pods={"pod-0": then})
    assert judge(DEFAULTS, same_process, after).figures.requests == 18


def test_pods_that_came_or_went_during_the_step() -> None:
    kept, gone, new = Metrics(), Metrics(), Metrics()
    observe(kept, Traffic().add(10))
    observe(gone, Traffic().add(10))
    before = sample_of({"kept": text(kept), "gone": text(gone)})
    observe(kept, Traffic().add(5))
    observe(new, Traffic().add(7).add(1, "500"))
    after = sample_of({"kept": text(kept), "new": text(new)})
    # kept: its 5 since the start; new: all it served; gone: nothing (lost with the pod).
    assert judge(DEFAULTS, before, after).figures.requests == 13
    # An empty start means "since each pod started".
    assert judge(DEFAULTS, MetricsSample(), after).figures.requests == 23


def test_a_sample_survives_a_round_trip_through_json() -> None:
    metrics = Metrics()
    observe(metrics, Traffic().add(3).add(1, "500", latency=9000))
    sample = sample_of({"pod-0": text(metrics)})
    assert MetricsSample.model_validate_json(sample.model_dump_json()) == sample
    assert sample.pods["pod-0"].latency["+Inf"] == 4


def test_the_runtime_series_are_read() -> None:
    metrics = Metrics()
    observe(metrics, Traffic().add(2).add(1, "500", latency=0.02))
    pod = parse_exposition(text(metrics))
    # Every code the runtime exports from the start, at 0 until counted.
    assert pod.requests["200"] == 2 and pod.requests["500"] == 1 and pod.requests["429"] == 0
    assert pod.latency[le_key(0.05)] == 1 and pod.latency["+Inf"] == 3
    assert pod.real_time_factor[le_key(0.1)] == 2
    assert pod.started is not None and math.isfinite(pod.started)


@pytest.mark.parametrize(
    "body",
    [
        "<html><body>502 Bad Gateway</body></html>",
        "# TYPE other_total counter\nother_total 3\n",  # another exporter
        "kubescribe_requests_total{code=200 1\n",
    ],
)
def test_text_that_is_not_the_runtimes_metrics_is_refused(body: str) -> None:
    with pytest.raises(ExpositionError):
        parse_exposition(body)


def test_an_empty_pod_sample_is_all_zero() -> None:
    verdict = judge(DEFAULTS, MetricsSample(), MetricsSample(pods={"p": PodSample()}))
    assert verdict.ok and verdict.figures.requests == 0 and verdict.figures.p95_latency_s is None
