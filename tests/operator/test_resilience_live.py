"""The operator outlives a restart of the real kube-apiserver (issue 10, point 4).

The API server of the test's cluster is stopped (SIGTERM) and started again on the same port
(the `restart_apiserver` fixture) while the real operator runs: every watch the operator holds
breaks, and every request it sends meanwhile fails. The operator reads from its watch caches,
so a change it missed is reconciled only once its watches are back: a spec change made right
after the restart, before the operator has reconnected, must still reach the Deployment, and the
status must report it, without a resync papering over a dead watch (a resync reads the caches).
(The audit log cannot show the new watches themselves: a watch is logged when it ends.)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kube_cluster import Cluster, OperatorProcess, eventually
from live import Models, is_ready, manifest, operator_requests

# The timeout only bounds a hang.
pytestmark = pytest.mark.timeout(300)


def test_the_operator_reconnects_after_an_api_server_restart_and_misses_no_change(
    cluster: Cluster,
    namespace: str,
    live_operator: OperatorProcess,
    restart_apiserver: Callable[[], None],
) -> None:
    models = Models(cluster, namespace)
    models.create(manifest())
    models.wait_status(is_ready("1.0"), "1.0 ready")

    restart_apiserver()
    # The audit log is one file across both API server processes: from here on, the new one.
    restarted = cluster.audit_offset()
    # Right away, before the operator has noticed the restart: a scale change and a new version.
    models.patch_spec("demo", {"replicas": 3})
    models.bump("demo", "2.0")
    generation = int((models.get() or {})["metadata"]["generation"])

    done = models.wait_status(
        lambda s: (
            is_ready("2.0")(s)
            and s.get("readyReplicas") == 3
            and s.get("observedGeneration") == generation
        ),
        "2.0 ready on 3 replicas after the restart",
    )
    assert [h["version"] for h in done["history"]] == ["1.0", "2.0"]
    eventually(lambda: models.pods_by_version() == {"2.0": 3}, "the 1.0 pods to go")
    assert live_operator.alive()
    # It acted through the new server: the Deployment re-applied and the status written.
    writes = {
        (e.verb, e.resource, e.code)
        for e in operator_requests(cluster, restarted, namespace)
        if e.is_write
    }
    assert {("patch", "deployments", 200), ("patch", "speechmodels/status", 200)} <= writes
    # And it keeps following changes once reconnected (a watch event, not a start-up listing).
    models.patch_spec("demo", {"replicas": 2})
    models.wait_status(
        lambda s: is_ready("2.0")(s) and s.get("replicas") == 2 and s.get("readyReplicas") == 2,
        "scaled back to 2",
    )
