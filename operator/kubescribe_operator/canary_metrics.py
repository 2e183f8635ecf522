"""Reading a canary's metrics for `kubescribe_operator.canary_analysis`: the edge.

    pod_targets(pods) -> [PodTarget]                       (pure: from the watch cache's pods)
    scrape_pods(targets) -> MetricsSample                  (each pod's /metrics, by its pod IP)
    query_prometheus(url, namespace, pods, at) -> MetricsSample
                                                           (the same series, as Prometheus
                                                            recorded them at time `at`)
    analyse_step(thresholds, namespace, pods, step_started=..., baseline=...) -> Verdict
                                                           (the source the spec names, judged)

Both give the same per-pod counters, so a step is judged the same way from either source. The
operator runs in the cluster and reaches pod IPs directly (the runtime's port serves /metrics
without an API key). Prometheus' series must carry the `namespace` and `pod` labels, as the
Prometheus Operator (the ServiceMonitor the operator renders) and the usual `kubernetes_sd`
relabelling set them.

Failures are `MetricsUnavailable` (or a subclass) with a message for a condition; the caller
decides what a step without metrics means.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import urllib3

from kubescribe_operator.canary_analysis import (
    LATENCY,
    PROCESS_START,
    REAL_TIME_FACTOR,
    REQUESTS,
    ExpositionError,
    MetricsSample,
    Verdict,
    judge,
    parse_exposition,
    pod_sample,
)
from kubescribe_operator.pod import HTTP_PORT
from kubescribe_operator.spec_traffic import CanaryAnalysis

DEFAULT_TIMEOUT_S = 5.0
# The series the analysis reads (canary_analysis.pod_sample), by their exposed names.
SERIES = (f"{REQUESTS}_total", f"{LATENCY}_bucket", f"{REAL_TIME_FACTOR}_bucket", PROCESS_START)


class MetricsUnavailable(Exception):
    """The canary's metrics could not be read; the message says which and why."""


class PodScrapeFailed(MetricsUnavailable):
    pass


class PrometheusQueryFailed(MetricsUnavailable):
    pass


class NoSeries(PrometheusQueryFailed):
    """Prometheus holds no series of these pods at that time (not scraped yet, or not at all)."""


@dataclass(frozen=True)
class PodTarget:
    name: str
    ip: str
    port: int = HTTP_PORT

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/metrics"


def pod_targets(pods: Iterable[Mapping[str, Any]], port: int = HTTP_PORT) -> list[PodTarget]:
    """The pods that can be scraped: running, with an IP, not being deleted (sorted by name)."""
    targets = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if metadata.get("deletionTimestamp") or status.get("phase") != "Running":
            continue
        if status.get("podIP") and metadata.get("name"):
            targets.append(PodTarget(str(metadata["name"]), str(status["podIP"]), port))
    return sorted(targets, key=lambda t: t.name)


def _pool(http: urllib3.PoolManager | None) -> urllib3.PoolManager:
    return http if http is not None else urllib3.PoolManager(retries=False)


def scrape_pods(
    targets: Sequence[PodTarget],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    http: urllib3.PoolManager | None = None,
) -> MetricsSample:
    """Every target's /metrics now. Raises PodScrapeFailed naming the first pod that failed."""
    pool = _pool(http)
    pods = {}
    for target in targets:
        try:
            response = pool.request("GET", target.url, timeout=timeout, retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise PodScrapeFailed(f"pod {target.name}: GET {target.url}: {exc}") from exc
        if response.status != 200:
            raise PodScrapeFailed(f"pod {target.name}: GET {target.url}: HTTP {response.status}")
        try:
            pods[target.name] = parse_exposition(response.data.decode("utf-8", "replace"))
        except ExpositionError as exc:
            raise PodScrapeFailed(f"pod {target.name}: GET {target.url}: {exc}") from exc
    return MetricsSample(pods=pods)


def _alternatives(values: Iterable[str]) -> str:
    """An RE2 alternation of literal values, as a PromQL string's content (its backslashes
    doubled: PromQL strings take Go's escapes)."""
    return "|".join(re.escape(value) for value in values).replace("\\", "\\\\")


def prometheus_selector(namespace: str, pods: Iterable[str]) -> str:
    """The PromQL selector of the analysis' series of these pods."""
    return (
        f'{{__name__=~"{_alternatives(SERIES)}",namespace="{namespace}",'
        f'pod=~"{_alternatives(sorted(pods))}"}}'
    )


def samples_from_vector(result: Sequence[Mapping[str, Any]]) -> MetricsSample:
    """Prometheus' instant vector (the API's `data.result`) -> per-pod sample. A pod scraped
    through two targets (two Services selecting it) has each series twice: counted once."""
    by_pod: dict[str, dict[tuple[str, str, str], tuple[str, dict[str, str], float]]] = {}
    for item in result:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        name, pod = labels.get("__name__", ""), labels.get("pod", "")
        value = float(item["value"][1])
        key = (name, labels.get("code", ""), labels.get("le", ""))
        series = by_pod.setdefault(pod, {})
        if key not in series or value > series[key][2]:
            series[key] = (name, labels, value)
    return MetricsSample(pods={pod: pod_sample(s.values()) for pod, s in by_pod.items()})


def query_prometheus(
    url: str,
    namespace: str,
    pods: Iterable[str],
    *,
    at: float | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    http: urllib3.PoolManager | None = None,
) -> MetricsSample:
    """The pods' series as Prometheus held them at `at` (Unix seconds; None: now), through its
    HTTP API (`/api/v1/query`). Raises PrometheusQueryFailed, or NoSeries when none of the pods
    has a series then (at a step's start the caller may take MetricsSample(): since each pod
    started)."""
    names = sorted(pods)
    if not names:
        return MetricsSample()
    fields: dict[str, str] = {"query": prometheus_selector(namespace, names)}
    if at is not None:
        fields["time"] = f"{at:.3f}"
    endpoint = url.rstrip("/") + "/api/v1/query"
    try:
        response = _pool(http).request(
            "POST", endpoint, fields=fields, encode_multipart=False, timeout=timeout, retries=False
        )
    except urllib3.exceptions.HTTPError as exc:
        raise PrometheusQueryFailed(f"Prometheus {endpoint}: {exc}") from exc
    try:
        body = json.loads(response.data)
    except ValueError:
        body = None
    if response.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error") if isinstance(body, dict) else response.data[:200].decode()
        raise PrometheusQueryFailed(f"Prometheus {endpoint}: HTTP {response.status}: {detail}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PrometheusQueryFailed(f"Prometheus {endpoint}: {data.get('resultType')}, no vector")
    try:
        sample = samples_from_vector(data.get("result") or [])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PrometheusQueryFailed(f"Prometheus {endpoint}: unexpected answer: {exc}") from exc
    if not sample.pods:
        raise NoSeries(
            f"Prometheus {url} has no kubescribe series of pods {', '.join(names)} in namespace "
            f"{namespace} (are they scraped, with namespace and pod labels?)"
        )
    return sample


def read_sample(
    thresholds: CanaryAnalysis,
    namespace: str,
    pods: Sequence[Mapping[str, Any]],
    *,
    at: float | None = None,
    port: int = HTTP_PORT,
    timeout: float = DEFAULT_TIMEOUT_S,
    http: urllib3.PoolManager | None = None,
) -> MetricsSample:
    """The canary pods' sample from the source the spec names: its Prometheus (at `at`, or now),
    else each pod's /metrics now (`at` must then be None: pods keep no past)."""
    if thresholds.prometheus_url:
        # Every canary pod Prometheus may hold series of, running or not.
        names = [str(pod["metadata"]["name"]) for pod in pods if pod.get("metadata")]
        return query_prometheus(
            thresholds.prometheus_url, namespace, names, at=at, timeout=timeout, http=http
        )
    if at is not None:
        raise ValueError("a pod's /metrics has no past: scrape at the step's start instead")
    return scrape_pods(pod_targets(pods, port), timeout=timeout, http=http)


def analyse_step(
    thresholds: CanaryAnalysis,
    namespace: str,
    pods: Sequence[Mapping[str, Any]],
    *,
    step_started: float,
    baseline: MetricsSample | None = None,
    port: int = HTTP_PORT,
    timeout: float = DEFAULT_TIMEOUT_S,
    http: urllib3.PoolManager | None = None,
) -> Verdict:
    """Judge the running step now. From Prometheus, the step's start is read back at
    `step_started` (no series then: since each pod started). From the pods, `baseline` is the
    sample the caller took when the step started; without one, every request each pod served
    counts (exact for the first step, whose pods are new). Raises MetricsUnavailable."""
    if thresholds.prometheus_url:
        try:
            before = read_sample(
                thresholds, namespace, pods, at=step_started, timeout=timeout, http=http
            )
        except NoSeries:
            before = MetricsSample()
    else:
        before = baseline or MetricsSample()
    after = read_sample(thresholds, namespace, pods, port=port, timeout=timeout, http=http)
    return judge(thresholds, before, after)
