"""The operator process's own health: it exits rather than live on as a zombie.

kopf does not reliably come back from a long API-server outage: past ~100 s its peering or
watch tasks either fail (the process exits) or die quietly while the process, its liveness
endpoint's socket and `/metrics` live on, reconciling nothing and ignoring SIGTERM. So kopf runs
in a thread of its own and the main thread watches it (`process.main`):

- the API server: `GET /readyz` every 2 s (a non-resource URL every
  authenticated user may read; not counted against any namespace). Unreachable for longer than
  ``outage_limit``: the process exits (code 1) so its Deployment restarts it with fresh watches
  and caches, which then reconcile everything once (`on.resume`);
- kopf's liveness endpoint (when enabled): refused or failing for longer than ``alive_limit``
  (5 s) after it had answered: the same (kopf is stopping, or its tasks died);
- a stop also closes `/metrics` at once, so that it and the liveness endpoint go together;
- a stop (SIGTERM, SIGINT, or either of the above) asks kopf to stop and exits after at most
  ``grace`` seconds whatever kopf does, so a pod's termination never waits for SIGKILL.

`kubescribe_operator_heartbeat_timestamp_seconds` is the last time both checks passed, so an
alert can tell a live operator from one that merely serves `/metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubescribe_operator.metrics import HEARTBEAT


@dataclass
class Watchdog:
    """Decides when the process must exit; the checks are given (pure but for them)."""

    api_ok: Callable[[], bool]
    alive: Callable[[], bool] | None  # kopf's liveness endpoint; None: disabled
    outage_limit: float = 60.0
    # kopf's liveness endpoint refusing after it had answered: kopf is stopping or its tasks
    # died (the zombie); no reason to wait as long as for the API server.
    alive_limit: float = 5.0
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _api_since: float | None = None  # the last time the API answered
    _alive_since: float | None = None  # the last time kopf's liveness answered
    _alive_seen: bool = False
    _started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def check(self) -> str | None:
        """One round of checks: why the process must exit now, or None."""
        now = self.clock()
        api = self.api_ok()
        if api:
            self._api_since = now
        alive = self.alive() if self.alive is not None else True
        if alive:
            self._alive_since, self._alive_seen = now, True
        if api and alive:
            HEARTBEAT.set(self.wall())
        api_gone = now - (self._api_since if self._api_since is not None else self._started)
        if api_gone > self.outage_limit:
            return (
                f"the API server has been unreachable for {api_gone:.0f} s: exiting, so that "
                "the operator is restarted with fresh watches"
            )
        if self._alive_seen and self._alive_since is not None:
            dead = now - self._alive_since
            if dead > self.alive_limit:
                return f"kopf's liveness endpoint has not answered for {dead:.0f} s: exiting"
        return None
