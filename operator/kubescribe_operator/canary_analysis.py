"""Judging a canary step on the runtime's own metrics. Pure.

    parse_exposition(text) -> PodSample          (one pod's /metrics, the runtime's exposition)
    MetricsSample(pods={pod: PodSample})         (the canary pods at one time)
    judge(thresholds, before, after) -> Verdict  (the step's figures against spec thresholds)

A step is judged on what the canary's pods counted between the step's start (`before`) and now
(`after`): requests by status code (`kubescribe_requests_total`), the request latency histogram
(`kubescribe_request_duration_seconds`) and the real-time factor histogram
(`kubescribe_real_time_factor_ratio`). The p95 figures are computed from bucket deltas as
Prometheus' `histogram_quantile(0.95, sum by (le) (increase(..._bucket[step])))` computes them.

A sample keeps its pods apart because counters restart at 0 when a pod's process restarts: a pod
whose `process_start_time_seconds` changed, or any of whose counters went down, counts from 0
(as Prometheus' `increase()` does); a pod new since `before` counts everything it served; a pod
gone since `before` contributes nothing (its last counts are lost with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from kubescribe_operator.spec_traffic import CanaryAnalysis

# The runtime's metric names (runtime/kubescribe_runtime/metrics.py), without the suffixes the
# exposition adds (`_total`, `_bucket`).
REQUESTS = "kubescribe_requests"
LATENCY = "kubescribe_request_duration_seconds"
REAL_TIME_FACTOR = "kubescribe_real_time_factor_ratio"
PROCESS_START = "process_start_time_seconds"
QUANTILE = 0.95

# Cumulative counts by upper bound, keyed as the `le` label ("0.05", "+Inf"): JSON keeps them
# (a float key of infinity would not survive a round trip through status).
Buckets = dict[str, float]


class ExpositionError(ValueError):
    """A /metrics text that is not Prometheus' exposition format, or lacks the runtime's series."""


class PodSample(BaseModel):
    """One pod's counters at one time."""

    model_config = ConfigDict(frozen=True)

    started: float | None = None  # process_start_time_seconds: changes when the process restarts
    requests: dict[str, float] = Field(default_factory=dict)  # by HTTP status code
    latency: Buckets = Field(default_factory=dict)  # summed over status codes
    real_time_factor: Buckets = Field(default_factory=dict)


class MetricsSample(BaseModel):
    """The canary's pods at one time, by pod name. Serialisable (e.g. into status), so that a
    step's start survives an operator restart; an empty sample means "since each pod started"."""

    model_config = ConfigDict(frozen=True)

    pods: dict[str, PodSample] = Field(default_factory=dict)


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int  # answered 5xx
    error_ratio: float | None  # None: no requests
    p95_latency_s: float | None
    real_time_factor: float | None  # p95 of the per-request real-time factor


@dataclass(frozen=True)
class Verdict:
    ok: bool  # False: a threshold is breached, the canary must be aborted
    reason: str  # one line for a condition message or an Event
    figures: Figures
    enough_requests: bool  # at least minRequests were seen (a verdict either way)


# ----------------------------------------------------------------------------- parsing


def le_key(le: str | float) -> str:
    """One spelling per bound: "1" and "1.0" (Prometheus' API and the exposition differ)."""
    bound = float(le)
    return "+Inf" if math.isinf(bound) else repr(bound)


def _merge(buckets: Buckets, le: str, value: float) -> None:
    key = le_key(le)
    buckets[key] = buckets.get(key, 0.0) + value


def _sorted(buckets: Buckets) -> list[tuple[float, float]]:
    return sorted((float(le), count) for le, count in buckets.items())


def pod_sample(series: Iterable[tuple[str, Mapping[str, str], float]]) -> PodSample:
    """One pod's sample from its series (name with suffix, labels, value), as the exposition or
    Prometheus' API gives them; series the analysis does not read are ignored."""
    requests: dict[str, float] = {}
    latency: Buckets = {}
    rtf: Buckets = {}
    started: float | None = None
    for name, labels, value in series:
        if name == f"{REQUESTS}_total":
            code = labels.get("code", "")
            requests[code] = requests.get(code, 0.0) + value
        elif name == f"{LATENCY}_bucket":
            _merge(latency, labels["le"], value)
        elif name == f"{REAL_TIME_FACTOR}_bucket":
            _merge(rtf, labels["le"], value)
        elif name == PROCESS_START:
            started = value
    return PodSample(started=started, requests=requests, latency=latency, real_time_factor=rtf)


def parse_exposition(text: str) -> PodSample:
    """One runtime's /metrics text -> its sample. Raises ExpositionError on text that is not
    the exposition format or that lacks the runtime's request counter."""
    try:
        series = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]
        sample = pod_sample(series)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ExpositionError(f"not Prometheus exposition text: {exc}") from exc
    if not any(name == f"{REQUESTS}_total" for name, _, _ in series):
        raise ExpositionError(f"no {REQUESTS}_total series: not a kubescribe runtime")
    return sample


def sample_of(pods: Mapping[str, str]) -> MetricsSample:
    """Pod name -> its /metrics text, as one sample."""
    return MetricsSample(pods={pod: parse_exposition(text) for pod, text in pods.items()})


# ----------------------------------------------------------------------------- deltas


def _bucket_delta(before: Buckets, after: Buckets) -> Buckets:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def _restarted(before: PodSample, after: PodSample) -> bool:
    if None not in (before.started, after.started) and before.started != after.started:
        return True
    went_down = any(after.requests.get(code, 0.0) < n for code, n in before.requests.items())
    for old, new in (
        (before.latency, after.latency),
        (before.real_time_factor, after.real_time_factor),
    ):
        went_down = went_down or any(d < 0 for d in _bucket_delta(old, new).values())
    return went_down


@dataclass(frozen=True)
class _Delta:
    requests: dict[str, float]
    latency: Buckets
    real_time_factor: Buckets


def _add(into: Buckets, buckets: Buckets) -> None:
    for le, count in buckets.items():
        into[le] = into.get(le, 0.0) + count


def delta(before: MetricsSample, after: MetricsSample) -> _Delta:
    """What the pods of `after` counted since `before`, summed over pods."""
    requests: dict[str, float] = {}
    latency: Buckets = {}
    rtf: Buckets = {}
    for pod, now in after.pods.items():
        then = before.pods.get(pod)
        if then is None or _restarted(then, now):
            then = PodSample()
        for code, n in now.requests.items():
            requests[code] = requests.get(code, 0.0) + n - then.requests.get(code, 0.0)
        _add(latency, _bucket_delta(then.latency, now.latency))
        _add(rtf, _bucket_delta(then.real_time_factor, now.real_time_factor))
    return _Delta(requests, latency, rtf)


def histogram_quantile(q: float, cumulative: Buckets) -> float | None:
    """Prometheus' histogram_quantile on cumulative buckets: linear interpolation in the bucket
    holding the rank; the highest finite bound when it falls in +Inf. None: no observations."""
    buckets = _sorted(cumulative)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(
        i for i, (_, count) in enumerate(buckets) if count >= rank or i == len(buckets) - 1
    )
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper, count = buckets[index]
    if index == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = buckets[index - 1]
    if count == below:
        return upper
    return lower + (upper - lower) * (rank - below) / (count - below)


# ----------------------------------------------------------------------------- judging


def figures(before: MetricsSample, after: MetricsSample) -> Figures:
    counted = delta(before, after)
    requests = round(sum(counted.requests.values()))
    errors = round(sum(n for code, n in counted.requests.items() if code.startswith("5")))
    return Figures(
        requests=requests,
        errors=errors,
        error_ratio=errors / requests if requests > 0 else None,
        p95_latency_s=histogram_quantile(QUANTILE, counted.latency),
        real_time_factor=histogram_quantile(QUANTILE, counted.real_time_factor),
    )


def _g(value: float) -> str:
    return f"{value:.3g}"


def judge(thresholds: CanaryAnalysis, before: MetricsSample, after: MetricsSample) -> Verdict:
    """The step's verdict: every threshold set in the spec against the canary's figures since
    `before`. A step with fewer than minRequests requests is judged on what it saw, and says so;
    with no requests there is nothing to breach."""
    seen = figures(before, after)
    breaches: list[str] = []
    if seen.error_ratio is not None and seen.error_ratio > thresholds.max_error_ratio:
        breaches.append(
            f"error ratio {_g(seen.error_ratio)} ({seen.errors} of {seen.requests} requests "
            f"answered 5xx) above maxErrorRatio {_g(thresholds.max_error_ratio)}"
        )
    limit = thresholds.max_p95_latency_seconds
    if limit is not None and seen.p95_latency_s is not None and seen.p95_latency_s > limit:
        breaches.append(
            f"p95 latency {_g(seen.p95_latency_s)} s above maxP95LatencySeconds {_g(limit)}"
        )
    limit = thresholds.max_real_time_factor
    if limit is not None and seen.real_time_factor is not None and seen.real_time_factor > limit:
        breaches.append(
            f"p95 real-time factor {_g(seen.real_time_factor)} above maxRealTimeFactor {_g(limit)}"
        )
    enough = seen.requests >= thresholds.min_requests
    few = (
        ""
        if enough
        else f" (only {seen.requests} requests, fewer than minRequests "
        f"{thresholds.min_requests}: judged on what it saw)"
    )
    if breaches:
        return Verdict(False, "; ".join(breaches) + few, seen, enough)
    if seen.requests == 0:
        return Verdict(True, "no requests reached the canary yet", seen, enough)
    parts = [f"{seen.requests} requests", f"error ratio {_g(seen.error_ratio or 0.0)}"]
    if seen.p95_latency_s is not None:
        parts.append(f"p95 latency {_g(seen.p95_latency_s)} s")
    if seen.real_time_factor is not None:
        parts.append(f"p95 real-time factor {_g(seen.real_time_factor)}")
    return Verdict(True, "within thresholds: " + ", ".join(parts) + few, seen, enough)
