"""The operator through API-server outages of 100 s and 5 minutes (finding 22.2).

kopf did not come back reliably from such outages: some processes exited, others lived on as
zombies (`/healthz` refusing, `/metrics` answering, nothing reconciled, SIGTERM ignored). Now the
process exits once the API server has been unreachable for `--api-outage-exit-seconds` (60 s by
default) and its Deployment restarts it; here a supervisor thread stands in for the kubelet and
starts it again whenever it exits. Throughout the outage the operator's `/metrics` and `/healthz`
answer alike, but for the seconds a stopping process takes (the zombie kept `/metrics` for
minutes), so `KubescribeOperatorAbsent` sees what the liveness probe sees; after it, a
change made right away reaches the Deployment and the status (nothing stale); SIGTERM ends the
process by itself.

Cost: one test, parametrised: 100 s + 300 s of outage plus convergence: 10 min 52 s for both
with the cluster's start, measured on a busy 2-core machine (the operator exited once in the
100 s outage and 4 times in the 5-minute one, restarted each time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kube_cluster import Cluster, OperatorProcess, eventually, free_port
from live import Models, http_get, is_ready, manifest

pytestmark = pytest.mark.timeout(900)


class Supervisor:
    """Starts the operator again whenever it exits, as its Deployment's kubelet would."""

    def __init__(self, operator: OperatorProcess) -> None:
        self.operator = operator
        self.exits: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._done.wait(1.0):  # the kubelet's restart back-off, shortened
            with self._lock:
                proc = self.operator.proc
                if proc is not None and proc.poll() is not None:
                    self.exits.append(proc.returncode)
                    self.operator.proc = None
                    self.operator.start()

    def pid(self) -> int | None:
        with self._lock:
            proc = self.operator.proc
            return proc.pid if proc is not None and proc.poll() is None else None


def endpoints_agree(operator: OperatorProcess, liveness: str, supervisor: Supervisor) -> int:
    """0 when `/metrics` and `/healthz` answer alike (or the process exited or was restarted
    in between), else the pid of the process whose endpoints disagree."""
    pid = supervisor.pid()
    metrics_up = http_get(operator.metrics_url)[0] == 200
    healthz_up = http_get(liveness)[0] == 200
    if pid is None or supervisor.pid() != pid:
        return 0
    return 0 if metrics_up == healthz_up else pid


# A process whose endpoints disagree on this many samples in a row (2 s apart) is a zombie:
# the watchdog closes /metrics within its 2 s checks of kopf's liveness failing for 5 s.
ZOMBIE_SAMPLES = 6


@pytest.mark.parametrize("outage_seconds", [100, 300], ids=["100s", "5min"])
def test_the_operator_comes_back_from_a_long_api_server_outage(
    cluster: Cluster,
    namespace: str,
    operator_kubeconfig: Path,
    tmp_path: Path,
    restart_apiserver: Callable[..., None],
    outage_seconds: int,
) -> None:
    port = free_port()
    liveness = f"http://127.0.0.1:{port}/healthz"
    operator = OperatorProcess(operator_kubeconfig, tmp_path, "--liveness-port", str(port))
    operator.start()
    models = Models(cluster, namespace)
    disagreements: list[str] = []
    try:
        models.create(manifest())
        models.wait_status(is_ready("1.0"), "1.0 ready")
        eventually(lambda: http_get(liveness)[0] == 200, "the operator's liveness endpoint")

        def outage() -> None:
            end = time.monotonic() + outage_seconds
            streak: list[int] = []  # the pid of each disagreeing sample in a row
            while time.monotonic() < end:  # sampling for the outage's length (not a wait)
                pid = endpoints_agree(operator, liveness, supervisor)
                streak = [*streak, pid] if pid and streak[-1:] in ([], [pid]) else [pid] * bool(pid)
                if len(streak) >= ZOMBIE_SAMPLES:
                    disagreements.append(f"{outage_seconds - (end - time.monotonic()):.0f} s")
                time.sleep(2)

        with Supervisor(operator) as supervisor:
            restart_apiserver(outage)
            # At once, before the operator can have noticed: a new version on 3 replicas.
            models.patch_spec("demo", {"replicas": 3})
            models.bump("demo", "2.0")
            generation = int((models.get() or {})["metadata"]["generation"])
            done = models.wait_status(
                lambda s: (
                    is_ready("2.0")(s)
                    and s.get("readyReplicas") == 3
                    and s.get("observedGeneration") == generation
                ),
                "2.0 ready on 3 replicas after the outage",
                timeout=240,
            )
            assert "updating" not in str(done.get("conditions")), done
            eventually(lambda: models.pods_by_version() == {"2.0": 3}, "the 1.0 pods to go")
            eventually(
                lambda: http_get(liveness)[0] == 200 and http_get(operator.metrics_url)[0] == 200,
                "the operator's endpoints up",
            )
            print(f"operator exits during a {outage_seconds} s outage: {supervisor.exits}")
        assert disagreements == [], f"/metrics and /healthz disagreed for long at {disagreements}"
        models.delete()
        models.wait_gone()
    finally:
        proc = operator.proc
        operator.stop()
        print(operator.logs()[-20000:])
    # SIGTERM ended it by itself (SIGKILL after stop()'s wait would read -9).
    assert proc is not None and proc.returncode == 0, proc and proc.returncode
