"""The operator's Prometheus metrics (served by `kubescribe operator --metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "kubescribe_operator_reconciles_total",
    "SpeechModel reconciliations, by what triggered them",
    ["trigger"],
)
ERRORS = Counter(
    "kubescribe_operator_reconcile_errors_total",
    "Failed SpeechModel reconciliations (retried), by error kind",
    ["error"],
)
ROLLOUTS = Counter(
    "kubescribe_operator_rollouts_total",
    "Model rollouts by result: started, succeeded, failed, rolled_back",
    ["result"],
)
WRITES = Counter(
    "kubescribe_operator_writes_total",
    "Write requests to the Kubernetes API for children and status, by kind and verb",
    ["kind", "verb"],
)
DURATION = Histogram(
    "kubescribe_operator_reconcile_duration_seconds",
    "Time to reconcile one SpeechModel (gather, decide, apply)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Event reasons from the rollout decision -> the `result` label of ROLLOUTS.
ROLLOUT_RESULTS = {
    "RolloutStarted": "started",
    "RolloutSucceeded": "succeeded",
    "RolloutFailed": "failed",
    "RolledBack": "rolled_back",
}

# Every result exists at 0 from the process's start: `increase()` in the alerts sees the first
# failed rollout of a process only if the series existed before it (one born at 1 has no step).
for _result in ROLLOUT_RESULTS.values():
    ROLLOUTS.labels(_result)

HEARTBEAT = Gauge(
    "kubescribe_operator_heartbeat_timestamp_seconds",
    "Unix time at which the operator last saw the API server and its own liveness endpoint "
    "answer (a process that cannot see them exits after --api-outage-exit-seconds)",
)
