"""Intra-op threads from the container's CPU quota (cgroup v2 cpu.max, v1 CFS), not the node."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubescribe_runtime.cpu import cgroup_cpus, parse_cfs, parse_cpu_max, threads_for


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000", None), ("200000 100000", 2.0), ("150000 100000", 1.5), ("50000", 0.5)],
)
def test_cpu_max(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1", "100000", None), ("300000", "100000", 3.0)]
)
def test_cfs_quota(quota: str, period: str, cpus: float | None) -> None:
    assert parse_cfs(quota, period) == cpus


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_in_a_container_namespace(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg" / "cpu.max", "250000 100000\n")
    assert cgroup_cpus(tmp_path / "cg", tmp_path / "proc") == 2.5


def test_cgroup_v2_nested_the_smallest_quota_wins(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/kubepods/pod1/ctr\n")
    write(tmp_path / "cg" / "kubepods" / "cpu.max", "max 100000\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "cpu.max", "400000 100000\n")
    write(tmp_path / "cg" / "kubepods" / "pod1" / "ctr" / "cpu.max", "max 100000\n")
    assert cgroup_cpus(tmp_path / "cg", tmp_path / "proc") == 4.0


def test_cgroup_v2_without_a_quota(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    assert cgroup_cpus(tmp_path / "cg", tmp_path / "proc") is None


def test_cgroup_v1_fallback(tmp_path: Path) -> None:
    write(tmp_path / "proc", "4:memory:/x\n3:cpu,cpuacct:/kubepods/pod1\n0::/\n")
    controller = tmp_path / "cg" / "cpu,cpuacct" / "kubepods" / "pod1"
    write(controller / "cpu.cfs_quota_us", "150000\n")
    write(controller / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpus(tmp_path / "cg", tmp_path / "proc") == 1.5


def test_no_cgroup_information_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpus(tmp_path / "nothing", tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("quota", "usable", "threads"),
    [
        (None, 64, 64),  # no quota: every CPU the scheduler gives
        (2.0, 64, 2),  # a 2-CPU limit on a 64-core node: 2, not 64
        (1.5, 64, 2),  # rounded up
        (0.25, 64, 1),  # never 0
        (8.0, 4, 4),  # never more than the usable CPUs
    ],
)
def test_threads_follow_the_quota(quota: float | None, usable: int, threads: int) -> None:
    assert threads_for(quota, usable) == threads
