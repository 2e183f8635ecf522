"""How many CPUs this process may really use: its container's CPU quota, not the node's cores.

A pod limited to 2 CPUs on a 64-core node sees 64 cores (``os.cpu_count()``); onnxruntime sizes
its intra-op pool by that, and the kernel's CFS quota then throttles the 64 threads in every
inference. The quota is read from the cgroup the process runs in:

- cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) of the process's cgroup
  (``0::<path>`` in ``/proc/self/cgroup``) and of every parent up to the mount root — the
  smallest quota wins;
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the ``cpu`` controller's cgroup
  (``-1``: no quota).

The CPUs the scheduler lets the process run on (``sched_getaffinity``) bound the result too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def parse_cpu_max(text: str) -> float | None:
    """CPUs of a cgroup v2 ``cpu.max`` (``None``: no quota)."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = float(fields[1]) if len(fields) > 1 else 100_000.0
    quota = float(fields[0])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_us: str, period_us: str) -> float | None:
    """CPUs of a cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` (``None``: -1)."""
    quota, period = float(quota_us), float(period_us)
    return quota / period if quota > 0 and period > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _min(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def cgroup_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5); ``None`` when unlimited or
    unknown."""
    membership = _read(proc_cgroup) or ""
    for line in membership.splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.strip("/")
        if hierarchy == "0" and controllers == "":  # cgroup v2
            directory = root / relative
            quotas = []
            while True:
                text = _read(directory / "cpu.max")
                quotas.append(parse_cpu_max(text) if text else None)
                if directory == root or root not in directory.parents:
                    break
                directory = directory.parent
            return _min(quotas)
        if "cpu" in controllers.split(","):  # cgroup v1
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                for directory in (mount / relative, mount):
                    quota = _read(directory / "cpu.cfs_quota_us")
                    period = _read(directory / "cpu.cfs_period_us")
                    if quota is not None and period is not None:
                        return parse_cfs(quota, period)
    return None


def usable_cpus() -> int:
    """CPUs the scheduler lets this process run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def threads_for(quota: float | None, usable: int) -> int:
    """Intra-op threads for a CPU quota (``None``: none) and the usable CPUs: the quota rounded
    up, at most the usable CPUs."""
    if quota is None:
        return max(1, usable)
    return max(1, min(usable, math.ceil(quota - 1e-9)))


def default_threads() -> int:
    """:func:`threads_for` this process's cgroup quota and usable CPUs."""
    return threads_for(cgroup_cpus(), usable_cpus())
