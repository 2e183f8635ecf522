"""A canary that fails part of its requests is aborted at its first step (issue 19.4), on real
pods behind a real gateway.

The SpeechModel `demo` (the runtime image's bundled demo model, on the local cluster's real
node) is routed through Traefik (cluster/gateways.py) with `rollout.strategy: Canary`. Its new
version is the demo artifact whose model fails audio longer than 5 s for real
(tests/operator/failing_artifact.py), served to the pods over https by the test. Two clients
send short and long clips through the gateway the whole time. The operator judges the first step
(10 %) on the canary pods' own /metrics, finds the error ratio above maxErrorRatio and aborts:
all traffic back to the stable version, the canary scaled away, step 2 never reached. The failed
requests are long clips that the canary answered, within the first step's share of the traffic.
The test prints the counts.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from failing_artifact import LONG_S, SHORT_S, clip, failing_artifact
from gateways import NAMESPACE as GATEWAY_NS
from gateways import TRAEFIK_CONTROLLER, Gateways
from kube_cluster import Cluster, NodeHandle, OperatorProcess, eventually
from kubescribe_operator.canary_children import LABEL_TRACK
from live import Models, is_ready, pod_states
from real_pods import CLUSTER_CA_BUNDLE, ArtifactServer, real_model, restrict

WEIGHT = 10  # the first step's share
PAUSE_S = 45  # the first step runs this long before it is judged
MAX_ERROR_RATIO = 0.05
BAD = "0.2.0"


@dataclass
class Clients:
    """`clients` threads posting the short and the long clip in turn through the gateway."""

    url: str
    clients: int = 2
    results: list[tuple[float, float, str, int]] = field(default_factory=list)  # start, end,
    _stop: threading.Event = field(default_factory=threading.Event)  # clip, status
    bodies: list[str] = field(default_factory=list)  # the failures' answers
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Clients:
        audio = {"short": clip(SHORT_S), "long": clip(LONG_S)}
        for i in range(self.clients):
            order = ("short", "long") if i % 2 == 0 else ("long", "short")
            thread = threading.Thread(target=self._run, args=(audio, order), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, audio: dict[str, bytes], order: tuple[str, str]) -> None:
        for kind in itertools.cycle(order):
            if self._stop.is_set():
                return
            started = time.monotonic()
            try:
                answer = requests.post(
                    self.url + "/v1/audio/transcriptions",
                    headers={"x-kubescribe-model": "demo"},
                    files={"file": (f"{kind}.wav", audio[kind], "audio/wav")},
                    data={"model": "demo"},
                    timeout=120,
                )
                status, body = answer.status_code, answer.text[:120]
            except requests.RequestException as exc:
                status, body = 0, repr(exc)[:120]
            self.results.append((started, time.monotonic(), kind, status))
            if status != 200:
                self.bodies.append(f"{started:.2f} {kind} {status} {body}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(150)

    def between(self, start: float, end: float) -> list[tuple[float, float, str, int]]:
        """The requests answered in [start, end]."""
        return [r for r in list(self.results) if start <= r[1] <= end]


def accepted_by_traefik(route: dict[str, Any] | None) -> bool:
    for parent in ((route or {}).get("status") or {}).get("parents") or []:
        conditions = {c["type"]: c["status"] for c in parent.get("conditions") or []}
        if (
            parent.get("controllerName") == TRAEFIK_CONTROLLER
            and conditions.get("Accepted") == conditions.get("ResolvedRefs") == "True"
        ):
            return True
    return False


def canary_model() -> dict[str, Any]:
    body = real_model("demo", replicas=1)
    spec = body["spec"]
    spec["routing"] = {"parentRefs": [{"name": "traefik", "namespace": GATEWAY_NS}]}
    spec["rollout"] = {
        "strategy": "Canary",
        "canary": {
            "steps": [{"weight": WEIGHT, "pauseSeconds": PAUSE_S}, {"weight": 50}],
            "analysis": {"maxErrorRatio": MAX_ERROR_RATIO, "minRequests": 5},
        },
    }
    spec["pod"] = {"automountServiceAccountToken": True}  # its ca.crt signs the artifact server
    return body


def test_a_canary_failing_part_of_its_requests_is_aborted_at_the_first_step(
    cluster: Cluster,
    real_node: NodeHandle,
    namespace: str,
    live_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    restrict(cluster, namespace)
    models = Models(cluster, namespace)
    digest = failing_artifact(tmp_path / "artifacts" / "demo")
    cluster.kubectl(
        "create", "secret", "generic", "artifact-ca", "-n", namespace,
        f"--from-literal=REQUESTS_CA_BUNDLE={CLUSTER_CA_BUNDLE}",
    )  # fmt: skip
    gateways = Gateways(
        lambda args, stdin: cluster.kubectl(*args, input=stdin).stdout,
        cluster.server, cluster.local.pki.ca_cert, tmp_path / "gateways",
    )  # fmt: skip
    gateways.start()
    try:
        with ArtifactServer(tmp_path / "artifacts", real_node) as artifacts:
            run(cluster, models, gateways.traefik_url, artifacts.url("demo"), digest)
    finally:
        gateways.stop()


def run(cluster: Cluster, models: Models, url: str, artifact: str, digest: str) -> None:
    t0 = time.monotonic()
    models.create(canary_model())
    models.wait_status(is_ready("0.1.0"), "0.1.0 Ready on the real node", timeout=300)
    routes = kubernetes_routes(models)
    eventually(lambda: accepted_by_traefik(routes()), "the HTTPRoute accepted by Traefik")
    with Clients(url) as clients:
        eventually(
            lambda: any(r[3] == 200 for r in clients.results), "Traefik serving demo", timeout=60
        )
        print(f"0.1.0 Ready behind Traefik in {time.monotonic() - t0:.1f} s")
        patched = time.monotonic()
        models.patch_spec(
            "demo",
            {"model": {"uri": artifact, "version": BAD, "sha256": digest,
                       "credentialsSecret": "artifact-ca"}},
        )  # fmt: skip
        seen: list[dict[str, Any]] = []  # status.canary as it went

        def running() -> dict[str, Any] | None:
            canary = models.status().get("canary")
            if canary:
                seen.append(canary | {"at": round(time.monotonic() - patched, 1)})
            return canary if canary and canary.get("state") == "Running" else None

        eventually(
            running,
            lambda: (
                f"the canary's first step running (seen {seen[-1:]}; "
                f"pods {[pod_states(p) for p in models.pods()]})"
            ),
            400,
        )
        step_started = time.monotonic()

        def aborted() -> dict[str, Any] | None:
            status = models.status()
            if status.get("canary"):
                seen.append(status["canary"] | {"at": round(time.monotonic() - patched, 1)})
                return None
            history = status.get("history") or [{}]
            return status if history[-1].get("result") == "Aborted" else None

        status = eventually(aborted, lambda: f"the canary aborted (seen {seen[-1:]})", 300)
        step_ended = time.monotonic()
        # Gone from the API, not only terminating: a terminating canary pod still answers
        # (it drains, and a gateway may send it requests until its endpoint goes).
        eventually(
            lambda: all(
                (p["metadata"].get("labels") or {}).get(LABEL_TRACK) != "canary"
                for p in models.pods()
            ),
            "the canary's pods gone",
        )
        settled = time.monotonic()
        eventually(
            lambda: len(clients.between(settled, time.monotonic())) >= 8,
            "8 requests answered after the abort",
            timeout=180,
        )
    during = clients.between(step_started, step_ended)
    exposed = clients.between(step_started, settled)  # the canary had traffic in there
    failed = [r for r in clients.results if r[3] != 200]
    after = clients.between(settled, time.monotonic())
    message = status["history"][-1].get("message", "")
    counted = re.search(r"(\d+) of (\d+) requests answered 5xx", message)
    print(
        f"step 1 ({WEIGHT} %) ran {step_ended - step_started:.1f} s: {len(during)} requests "
        f"through Traefik; until the canary's pods were gone {len(exposed)}, {len(failed)} failed "
        f"({sorted({r[3] for r in failed})}, clips {sorted({r[2] for r in failed})}) = "
        f"{len(failed) / max(len(exposed), 1):.1%}; "
        f"the canary's pods counted {counted.group(0) if counted else '?'}; "
        f"after the abort {len(after)} requests, {sum(r[3] != 200 for r in after)} failed; "
        f"steps seen {sorted({int(c.get('step') or 0) for c in seen})}; {message!r}"
    )
    states = [(c["at"], c.get("state"), c.get("weight")) for c in seen]
    changes = [x for i, x in enumerate(states) if i == 0 or x[1:] != states[i - 1][1:]]
    print(f"patched at {patched:.2f}; the canary (s after the patch, state, weight): {changes}")
    print("failures:", *clients.bodies, sep="\n  ")
    assert status["failedVersion"] == BAD and status["currentVersion"] == "0.1.0"
    assert "error ratio" in message and "maxErrorRatio" in message, message
    assert {c.get("step") for c in seen} == {1}, "aborted at the first step, never beyond"
    # The canary failed only what its model fails (the long clips), ...
    assert failed and all(r[3] == 500 and r[2] == "long" for r in failed), failed
    # ... only while it had traffic, and within the first step's share of that traffic.
    assert all(patched <= r[0] and r[1] <= settled for r in failed), (failed, patched, settled)
    assert len(failed) <= (WEIGHT / 100 + 0.03) * len(exposed), (len(failed), len(exposed))
    assert after and all(r[3] == 200 for r in after), after


def kubernetes_routes(models: Models) -> Any:
    import kubernetes

    api = kubernetes.client.CustomObjectsApi(models.client)

    def read() -> dict[str, Any] | None:
        try:
            route: Any = api.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", models.ns, "httproutes", "demo"
            )
            return dict(route)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return read
