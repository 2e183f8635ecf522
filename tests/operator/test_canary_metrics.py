"""The canary analysis' readers (operator/kubescribe_operator/canary_metrics.py) against the real
runtime process on loopback serving a version that fails part of its requests for real
(tests/operator/failing_artifact.py), and a real Prometheus (Debian's, from `make tools`)
scraping it: judged from Prometheus' HTTP API or from the pod's /metrics, one verdict."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from failing_artifact import FAILS_LONGER_THAN_S, LONG_S, SHORT_S, clip, failing_artifact
from kubescribe_operator.canary_analysis import MetricsSample, judge
from kubescribe_operator.canary_metrics import (
    NoSeries,
    PodScrapeFailed,
    PodTarget,
    PrometheusQueryFailed,
    analyse_step,
    pod_targets,
    prometheus_selector,
    query_prometheus,
    samples_from_vector,
    scrape_pods,
)
from kubescribe_operator.spec_traffic import CanaryAnalysis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))
from rt_server import ServerProcess, free_port, post, running, wait_until  # noqa: E402

NAMESPACE, POD = "speech", "demo-canary-7c9d5-x2x4q"


def pod(name: str, ip: str | None = "10.0.0.5", phase: str = "Running", **meta: Any) -> dict:
    status = {"phase": phase, **({"podIP": ip} if ip else {})}
    return {"metadata": {"name": name, **meta}, "status": status}


@pytest.mark.parametrize(
    ("pods", "names"),
    [
        ([pod("b"), pod("a", ip="fd00::5")], ["a", "b"]),
        ([pod("a", ip=None), pod("b", phase="Pending")], []),  # nothing to scrape yet
        ([pod("a", deletionTimestamp="2026-12-07T06:00:00Z"), pod("b")], ["b"]),
    ],
)
def test_the_pods_scraped_are_the_running_ones(pods: list[dict], names: list[str]) -> None:
    assert [t.name for t in pod_targets(pods)] == names


def test_a_pod_url() -> None:
    assert PodTarget("a", "10.0.0.5").url == "http://10.0.0.5:8080/metrics"
    assert PodTarget("a", "fd00::5", 80).url == "http://[fd00::5]:80/metrics"


def test_the_promql_selector_names_the_pods_literally() -> None:
    selector = prometheus_selector("speech", ["demo-canary-1.x", "demo-canary-2"])
    assert 'namespace="speech"' in selector
    # RE2 escapes, each backslash doubled inside a PromQL string.
    assert 'pod=~"demo\\\\-canary\\\\-1\\\\.x|demo\\\\-canary\\\\-2"' in selector


def test_a_pod_scraped_through_two_services_counts_once() -> None:
    series = [
        {"metric": {"__name__": "kubescribe_requests_total", "pod": "p", "code": "500", "job": j}}
        | {"value": [1.0, "4"]}
        for j in ("demo", "demo-canary")
    ]
    assert samples_from_vector(series).pods["p"].requests == {"500": 4.0}


class _Fixed(http.server.BaseHTTPRequestHandler):
    status, body = 200, b""

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def fixed_server(status: int, body: bytes) -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Fixed,), {"status": status, "body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, b"<html>hello</html>", "not Prometheus exposition text"),
        (503, b"", "HTTP 503"),
        (None, b"", "Connection refused"),  # nothing listens
    ],
)
def test_a_pod_that_cannot_be_read_is_named(status: int | None, body: bytes, words: str) -> None:
    if status is None:
        target = PodTarget("demo-canary-1", "127.0.0.1", free_port())
        with pytest.raises(PodScrapeFailed, match=f"pod demo-canary-1: .*{words}"):
            scrape_pods([target], timeout=2)
        return
    server = fixed_server(status, body)
    try:
        target = PodTarget("demo-canary-1", "127.0.0.1", server.server_address[1])
        with pytest.raises(PodScrapeFailed, match=words):
            scrape_pods([target], timeout=2)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("status", "body", "error", "words"),
    [
        (400, b'{"status":"error","error":"parse error"}', PrometheusQueryFailed, "parse error"),
        (
            200,
            b'{"status":"success","data":{"resultType":"vector","result":[]}}',
            NoSeries,
            "no kubescribe series of pods",
        ),
        (502, b"<html>bad gateway</html>", PrometheusQueryFailed, "HTTP 502"),
    ],
)
def test_prometheus_failures_are_specific(
    status: int, body: bytes, error: type[Exception], words: str
) -> None:
    server = fixed_server(status, body)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/prom/"
        with pytest.raises(error, match=words):
            query_prometheus(url, NAMESPACE, [POD], timeout=2)
    finally:
        server.shutdown()


# ----------------------------------------------------------------------------- real processes


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The runtime serving the version that fails audio longer than FAILS_LONGER_THAN_S."""
    root = tmp_path_factory.mktemp("failing")
    failing_artifact(root / "artifact")
    with running(root / "artifact", root, "--vad", "silero") as server:  # as deployed
        yield server


def test_the_failing_version_really_fails_that_share(failing_server: ServerProcess) -> None:
    short, long = clip(SHORT_S), clip(LONG_S)
    answers = [post(failing_server.url, data).status_code for data in [short, long] * 3]
    print(f"failing version: {answers} (long clips {LONG_S} s > {FAILS_LONGER_THAN_S} s fail)")
    assert answers == [200, 500] * 3
    text = post(failing_server.url, short).json()["text"]
    assert "interest" in text  # the short clips are still transcribed


def test_a_step_judged_from_the_pods_own_metrics(failing_server: ServerProcess) -> None:
    ip, port = failing_server.url.removeprefix("http://").rsplit(":", 1)
    pods = [pod(POD, ip)]
    thresholds = CanaryAnalysis(max_error_ratio=0.2, min_requests=4)
    baseline = scrape_pods(pod_targets(pods, int(port)))
    for seconds in (SHORT_S, SHORT_S, SHORT_S, LONG_S):
        post(failing_server.url, clip(seconds))
    verdict = analyse_step(
        thresholds, NAMESPACE, pods, step_started=0, baseline=baseline, port=int(port)
    )
    assert (verdict.ok, verdict.figures.requests, verdict.figures.errors) == (False, 4, 1)
    assert verdict.enough_requests and "0.25 (1 of 4 requests" in verdict.reason
    # Without a baseline: everything the pod served since it started.
    since_start = analyse_step(thresholds, NAMESPACE, pods, step_started=0, port=int(port))
    assert since_start.figures.requests >= 4


class Prometheus:
    def __init__(self, root: Path, target: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: kubescribe\n"
            f"    static_configs: [{{targets: ['{target}'], "
            f"labels: {{namespace: {NAMESPACE}, pod: {POD}}}}}]\n",
            encoding="utf-8",
        )
        self.log = (root / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def last_scrape(self) -> float:
        """When Prometheus last scraped the pod (0: not yet)."""
        try:
            answer = requests.get(
                self.url + "/api/v1/query",
                params={"query": f'timestamp(kubescribe_requests_total{{pod="{POD}",code="200"}})'},
                timeout=2,
            ).json()
        except (requests.RequestException, ValueError):
            return 0.0
        result = answer.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else 0.0

    def scraped_after(self, moment: float) -> None:
        wait_until(lambda: self.last_scrape() > moment, f"a scrape after {moment}", seconds=30)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def test_prometheus_and_the_pod_give_one_verdict(
    failing_server: ServerProcess, tmp_path: Path
) -> None:
    """judge() on Prometheus' series at the step's start and now equals judge() on the pod's
    /metrics scraped then: 4 of 10 requests failed, both say so."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: run `make tools` (Debian's prometheus package)")
    host_port = failing_server.url.removeprefix("http://")
    ip, port = host_port.rsplit(":", 1)
    target = PodTarget(POD, ip, int(port))
    prometheus = Prometheus(tmp_path, host_port)
    try:
        direct_before = scrape_pods([target])
        started = time.time()
        prometheus.scraped_after(started)  # Prometheus' latest sample is direct_before's counts
        step_started = time.time()
        answers = [post(failing_server.url, clip(s)).status_code for s in [SHORT_S] * 6]
        answers += [post(failing_server.url, clip(LONG_S)).status_code for _ in range(4)]
        assert answers == [200] * 6 + [500] * 4
        direct_after = scrape_pods([target])
        scraped = time.time()
        prometheus.scraped_after(scraped)
        thresholds = CanaryAnalysis(prometheus_url=prometheus.url + "/", max_real_time_factor=50)
        from_prometheus = judge(
            thresholds,
            query_prometheus(prometheus.url, NAMESPACE, [POD], at=step_started),
            query_prometheus(prometheus.url, NAMESPACE, [POD]),
        )
        from_pod = judge(thresholds, direct_before, direct_after)
        print(f"from Prometheus: {from_prometheus}\nfrom the pod:    {from_pod}")
        assert from_prometheus == from_pod
        assert (from_pod.ok, from_pod.figures.requests, from_pod.figures.errors) == (False, 10, 4)
        assert "error ratio 0.4 (4 of 10 requests answered 5xx)" in from_pod.reason
        # The edge the operator calls: Prometheus read back at the step's start.
        pods = [pod(POD, ip)]
        assert analyse_step(thresholds, NAMESPACE, pods, step_started=step_started) == from_pod
        # Before Prometheus held any series: since the pod started, as from the pod itself.
        early = analyse_step(thresholds, NAMESPACE, pods, step_started=started - 3600)
        assert early == judge(thresholds, MetricsSample(), direct_after)
    finally:
        prometheus.stop()
