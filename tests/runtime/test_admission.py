"""Admission, as a pure object: two bounds, refusals with a Retry-After from the backlog, and
the backlog shrinking as audio is transcribed."""

from __future__ import annotations

import pytest
from kubescribe_runtime.admission import PRIOR_RATE, Admission, Refused


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_request_bound_refuses_before_the_body_is_read() -> None:
    admission = Admission(max_requests=2, max_backlog_s=1000)
    first, second = admission.enter(), admission.enter()
    with pytest.raises(Refused) as refused:
        admission.enter()
    assert refused.value.reason == "requests" and refused.value.retry_after_s >= 1
    first.close()
    admission.enter().close()  # a slot came free
    second.close()
    assert (admission.requests, admission.refused) == (0, {"requests": 1, "backlog": 0})


@pytest.mark.parametrize(
    ("admitted", "asked", "accepted"),
    [
        ([], 5000.0, True),  # longer than the bound, but nothing else waits: never refused forever
        ([600.0], 300.0, True),  # exactly the bound long files may fill (90 %)
        ([600.0], 301.0, False),
        ([300.0, 300.0], 300.0, True),
        ([300.0, 300.0], 500.0, False),
        ([900.0], 31.0, False),  # long files filled their 90 %
        ([900.0], 30.0, True),  # a short clip still gets in: the last 10 % is kept for those
        ([900.0, 30.0, 30.0, 30.0], 10.0, True),
        ([900.0, 30.0, 30.0, 30.0], 11.0, False),  # beyond the whole bound
    ],
)
def test_the_audio_bound(admitted: list[float], asked: float, accepted: bool) -> None:
    admission = Admission(max_requests=10, max_backlog_s=1000)
    for seconds in admitted:
        admission.enter().admit_audio(seconds)
    ticket = admission.enter()
    if accepted:
        ticket.admit_audio(asked)
        assert admission.backlog_s == sum(admitted) + asked
    else:
        with pytest.raises(Refused) as refused:
            ticket.admit_audio(asked)
        assert refused.value.reason == "backlog"
        assert admission.backlog_s == sum(admitted)


def test_retry_after_is_the_backlog_at_the_measured_rate() -> None:
    clock = Clock()
    admission = Admission(max_requests=10, max_backlog_s=10_000, clock=clock)
    busy = admission.enter()
    busy.admit_audio(2000)
    # before any measurement: the prior rate; within [1, 60] s
    assert admission.retry_after_s() == min(60, int(2000 / PRIOR_RATE))
    for second in range(1, 30):  # transcribing 50 audio seconds per second
        clock.now = second
        busy.progress(50.0 * second)
    assert admission.rate == pytest.approx(50, rel=0.05)
    assert admission.backlog_s == 2000 - 50 * 29
    assert admission.retry_after_s() == pytest.approx((2000 - 50 * 29) / 50, abs=1)


def test_a_finished_or_abandoned_request_leaves_no_backlog() -> None:
    admission = Admission(max_requests=10, max_backlog_s=1000)
    with admission.enter() as done:
        done.admit_audio(100)
        done.progress(100)
        done.progress(120)  # never more than was admitted
    with admission.enter() as abandoned:  # a client that hung up half-way
        abandoned.admit_audio(300)
        abandoned.progress(150)
    assert (admission.requests, admission.backlog_s) == (0, 0)
