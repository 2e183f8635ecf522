"""Two operator releases that watch one namespace (a cluster-wide one and a `watchNamespaces`
one): detected from the SpeechModel itself, and only one of them acts. Pure.

Each release writes a SpeechModel's status under a field manager of its own,
``kubescribe-operator@<release>`` (the release: its peering name, which the chart makes the
release's full name), so the SpeechModel's managedFields say which releases wrote its status and
when. A release that finds a status write of another release made since it started knows that
release is alive and reconciles the model too; of the two, the one whose name sorts last warns
once (log, Warning Event `OverlappingReleases`) and leaves the model to the other. It takes the
model back if a spec change stays unobserved for ``TAKEOVER_SECONDS`` (the other release was
removed). An entry of a release removed before this process started is older than its start:
it makes nobody yield.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubescribe_operator.cache import STATUS_MANAGER_PREFIX

# How long a spec change may stay unobserved by the release a model was left to before this
# release takes it back (the other release is gone).
TAKEOVER_SECONDS = 30.0


def status_manager(release: str) -> str:
    return f"{STATUS_MANAGER_PREFIX}{release}"


def status_writes(body: Mapping[str, Any]) -> dict[str, str]:
    """release -> the time of its last write of the SpeechModel's status (RFC 3339)."""
    writes: dict[str, str] = {}
    for entry in (body.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if entry.get("subresource") == "status" and manager.startswith(STATUS_MANAGER_PREFIX):
            writes[manager.removeprefix(STATUS_MANAGER_PREFIX)] = str(entry.get("time") or "")
    return writes


def leaves_to(body: Mapping[str, Any], release: str, since: str) -> str | None:
    """The other release ``release`` leaves this SpeechModel to, or None. Another release that
    wrote its status at or after ``since`` (when this process started: that release is alive,
    not a stale entry of one removed before) and whose name sorts first keeps it: both sides
    decide alike without talking to each other."""
    writers = sorted(
        other for other, time in status_writes(body).items() if other != release and time >= since
    )
    return writers[0] if writers and writers[0] < release else None


def unobserved(body: Mapping[str, Any]) -> bool:
    """Whether the status has not caught up with the spec (metadata.generation)."""
    generation = (body.get("metadata") or {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    return generation is not None and (observed is None or int(observed) < int(generation))
