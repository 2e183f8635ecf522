"""The operator process's watchdog (finding 22.2): when it exits instead of living on as a zombie.

The live test (test_outage_live.py) shows the whole process through real API-server outages;
these pin the rules with a fake clock.
"""

from __future__ import annotations

import threading

import pytest
from kubescribe_operator import metrics, process, watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dog(api: list[bool], alive: list[bool] | None, clock: Clock) -> watchdog.Watchdog:
    return watchdog.Watchdog(
        api_ok=lambda: api[0],
        alive=(lambda: alive[0]) if alive is not None else None,
        outage_limit=60,
        clock=clock,
        wall=lambda: 1.7e9,
    )


def test_a_short_outage_is_ridden_out_and_a_long_one_ends_the_process() -> None:
    clock, api = Clock(), [True]
    d = dog(api, None, clock)
    assert d.check() is None
    api[0] = False
    clock.now += 59
    assert d.check() is None  # the API may come back: kopf's watches reconnect
    api[0] = True
    assert d.check() is None
    api[0] = False
    clock.now += 61
    reason = d.check()
    assert reason is not None and "API server has been unreachable for 61 s" in reason


def test_an_api_server_never_seen_counts_from_the_start() -> None:
    clock = Clock()
    d = dog([False], None, clock)
    clock.now += 30
    assert d.check() is None
    clock.now += 31
    assert d.check() is not None


def test_a_dead_liveness_endpoint_ends_the_process_once_it_had_answered() -> None:
    clock, alive = Clock(), [False]
    d = dog([True], alive, clock)
    clock.now += 120
    assert d.check() is None  # kopf not started yet: its endpoint comes later
    alive[0] = True
    assert d.check() is None
    alive[0] = False
    clock.now += 4
    assert d.check() is None  # one refused probe is no verdict
    clock.now += 2
    reason = d.check()
    assert reason is not None and "liveness" in reason


def test_the_heartbeat_moves_only_while_both_answer() -> None:
    clock, api = Clock(), [True]
    metrics.HEARTBEAT.set(0)
    d = dog(api, [True], clock)
    d.check()
    assert metrics.HEARTBEAT._value.get() == 1.7e9
    metrics.HEARTBEAT.set(0)
    api[0] = False
    d.check()
    assert metrics.HEARTBEAT._value.get() == 0


def test_a_stop_that_kopf_does_not_honour_ends_the_process_anyway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (or the watchdog) sets kopf's stop flag; a kopf that hangs does not hold the
    process past the grace period."""
    exits: list[int] = []
    monkeypatch.setattr(process, "STOP_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(process, "WATCH_INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(process, "_exit_now", lambda code: exits.append(code) or release.set())
    release = threading.Event()
    stop = threading.Event()
    clock, api = Clock(), [False]
    d = dog(api, None, clock)
    clock.now += 61  # the API has been gone for longer than the limit

    def hung_kopf() -> None:
        release.wait(30)  # ignores its stop flag, as the zombie did

    closed: list[bool] = []
    assert process._supervise(hung_kopf, stop, d, lambda: closed.append(True)) == 1
    assert stop.is_set() and exits == [1] and closed == [True]  # /metrics closed at the stop


def test_kopf_stopping_on_its_own_is_an_exit_for_a_restart() -> None:
    """(It once failed on a long outage and the process then hung at exit on a thread still
    waiting for the stop flag: the flag is set, and main() exits with os._exit.)"""
    clock, stop, closed = Clock(), threading.Event(), []
    d = dog([True], None, clock)
    assert process._supervise(lambda: None, stop, d, lambda: closed.append(True)) == 1
    assert stop.is_set() and closed == [True]
