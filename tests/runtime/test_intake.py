"""The server's intake (pure): a request is read whole, within its deadlines, before a thread
serves it; probes are recognised from their head alone."""

from __future__ import annotations

import pytest
from kubescribe_runtime.intake import Intake, IntakeLimits, Verdict, parse_head

LIMITS = IntakeLimits(
    header_timeout_s=10, body_min_rate=1000, body_grace_s=5, max_body_bytes=10_000,
    memory_bytes=100,
)  # fmt: skip


def head(method: str = "POST", path: str = "/v1/audio/transcriptions", **fields: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def feed_bytes(intake: Intake, data: bytes, now: float = 0.0) -> Verdict:
    """One byte at a time, as a trickling client sends it."""
    verdict = Verdict.MORE
    for i in range(len(data)):
        verdict = intake.feed(data[i : i + 1], now)
        if verdict is not Verdict.MORE:
            assert i == len(data) - 1, f"decided {verdict} before the end, at byte {i}"
    return verdict


def test_a_head_trickled_past_its_deadline_is_408() -> None:
    intake = Intake(LIMITS, started=0.0)
    assert intake.feed(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHo", 1.0) is Verdict.MORE
    assert intake.check(9.9) is Verdict.MORE
    assert intake.check(10.1) is Verdict.REJECT
    assert intake.rejection is not None
    assert (intake.rejection.status, intake.rejection.reason) == (408, "header_timeout")


@pytest.mark.parametrize(
    ("path", "method", "verdict"),
    [
        ("/healthz", "GET", Verdict.PROBE),
        ("/readyz?verbose=1", "GET", Verdict.PROBE),
        ("/readyz", "HEAD", Verdict.PROBE),
        ("/metrics", "GET", Verdict.READY),
        ("/v1/models", "GET", Verdict.READY),
    ],
)
def test_bodiless_requests_are_whole_at_their_blank_line(
    path: str, method: str, verdict: Verdict
) -> None:
    assert feed_bytes(Intake(LIMITS, started=0.0), head(method, path)) is verdict


def test_a_body_of_known_length_is_ready_at_its_last_byte_and_replayed_whole() -> None:
    body = bytes(range(256)) * 2  # over memory_bytes: spooled to a file
    intake = Intake(LIMITS, started=0.0)
    request = head(content_length=str(len(body))) + body
    assert feed_bytes(intake, request) is Verdict.READY
    assert intake.request_bytes().read() == request


def test_chunked_body_is_ready_at_its_last_chunk() -> None:
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    intake = Intake(LIMITS, started=0.0)
    assert feed_bytes(intake, head(transfer_encoding="chunked") + body) is Verdict.READY
    assert intake.request_bytes().read().endswith(body)


def test_a_body_slower_than_the_minimum_rate_is_408_after_its_grace() -> None:
    intake = Intake(LIMITS, started=0.0)
    assert intake.feed(head(content_length="9000"), 0.0) is Verdict.MORE
    assert intake.check(4.9) is Verdict.MORE  # the grace
    assert intake.feed(b"x" * 1000, 5.0) is Verdict.MORE
    assert intake.check(5.9) is Verdict.MORE  # 1000 bytes owed after 1 s of 1000 B/s
    assert intake.check(6.5) is Verdict.REJECT
    assert intake.rejection is not None
    assert (intake.rejection.status, intake.rejection.reason) == (408, "body_too_slow")


def test_an_upload_announced_over_the_limit_is_413_before_its_body() -> None:
    intake = Intake(LIMITS, started=0.0)
    assert intake.feed(head(content_length="10001"), 0.0) is Verdict.REJECT
    assert intake.rejection is not None and intake.rejection.status == 413


def test_a_head_without_end_past_its_size_limit_is_431() -> None:
    intake = Intake(IntakeLimits(max_header_bytes=100), started=0.0)
    assert intake.feed(head()[:-4] + b"\r\nX: " + b"y" * 100, 0.0) is Verdict.REJECT
    assert intake.rejection is not None and intake.rejection.status == 431


def test_expect_continue_is_answered_by_the_intake_and_not_passed_on() -> None:
    intake = Intake(LIMITS, started=0.0)
    assert intake.feed(head(content_length="3", expect="100-continue"), 0.0) is Verdict.MORE
    assert intake.wants_continue
    assert intake.feed(b"abc", 0.1) is Verdict.READY
    replay = intake.request_bytes().read()
    assert b"expect" not in replay.lower() and replay.endswith(b"\r\n\r\nabc")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        head(content_length="12x"),
        head(transfer_encoding="gzip"),
        head(method="GET", path="/v1/realtime", connection="Upgrade", upgrade="websocket"),
    ],
    ids=["bad-request-line", "bad-length", "unknown-encoding", "websocket-upgrade"],
)
def test_what_the_intake_cannot_follow_goes_to_the_full_parser_at_once(
    request_bytes: bytes,
) -> None:
    intake = Intake(LIMITS, started=0.0)
    assert intake.feed(request_bytes, 0.0) is Verdict.READY
    assert intake.request_bytes().read() == request_bytes


def test_parse_head_joins_repeated_fields_and_lowers_names() -> None:
    parsed = parse_head(b"GET /a?b=c HTTP/1.1\r\nX-A: 1\r\nx-a: 2")
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.header("x-a")) == ("GET", "/a", "1, 2")
