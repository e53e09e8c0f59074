"""app.dataplane.retry, the one retry policy, as tables: which failure leads where, for which method."""

from __future__ import annotations

import pytest

from app.dataplane import retry
from app.upstream.errors import (
    StaleConnectionError,
    UnreadRequestError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
)
from tests.stand_ins import InOrder

SAFE = [b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"]  # idempotent (RFC 9110 §9.2.2)
UNSAFE = [b"POST", b"PATCH", b"CONNECT", b"PROPFIND"]

REFUSED = UpstreamConnectError("refused")
RESET = UpstreamResetError("reset mid-request")
STALE = StaleConnectionError("reused connection closed before answering")
TIMEOUT = UpstreamTimeout("no answer in time")

# (failure, what follows for a safe method, for an unsafe one)
AFTER_FAILURE = [
    pytest.param(REFUSED, retry.NEXT_AND_REPORT, retry.NEXT_AND_REPORT, id="refused"),
    pytest.param(RESET, retry.NEXT, retry.NOT_TWICE, id="reset"),
    pytest.param(STALE, retry.SAME_AGAIN, retry.NOT_TWICE, id="stale"),
    pytest.param(UnreadRequestError("reset, request unread"), retry.NEXT, retry.NEXT, id="reset-unread"),
    pytest.param(TIMEOUT, retry.TIMED_OUT, retry.TIMED_OUT, id="timeout"),
    pytest.param(UpstreamError("odd response"), retry.NEXT, retry.NOT_TWICE, id="other"),
]


@pytest.mark.parametrize("exc, safe, unsafe", AFTER_FAILURE)
def test_after_failure(exc: UpstreamError, safe: int, unsafe: int) -> None:
    assert {m: retry.after_failure(exc, m) for m in SAFE} == dict.fromkeys(SAFE, safe)
    assert {m: retry.after_failure(exc, m) for m in UNSAFE} == dict.fromkeys(UNSAFE, unsafe)


def test_the_steps_are_distinct() -> None:
    steps = [retry.NEXT, retry.NEXT_AND_REPORT, retry.SAME_AGAIN, retry.NOT_TWICE, retry.TIMED_OUT]
    assert len(set(steps)) == len(steps)


@pytest.mark.parametrize(
    "exc, safe, unsafe",
    [
        pytest.param(REFUSED, True, True, id="refused"),
        pytest.param(RESET, True, True, id="reset"),
        pytest.param(STALE, False, True, id="stale"),  # retried unseen: not the replica's fault
        pytest.param(TIMEOUT, True, True, id="timeout"),
    ],
)
def test_counts_as_error(exc: UpstreamError, safe: bool, unsafe: bool) -> None:
    assert {retry.counts_as_error(exc, m) for m in SAFE} == {safe}
    assert {retry.counts_as_error(exc, m) for m in UNSAFE} == {unsafe}


def test_only_a_safe_method_may_go_on_an_idle_connection() -> None:
    assert {m: retry.may_reuse(m) for m in SAFE + UNSAFE} == {
        **dict.fromkeys(SAFE, True),
        **dict.fromkeys(UNSAFE, False),
    }


RING = InOrder(["a", "b", "c", "d"])


@pytest.mark.parametrize(
    "key, tried, max_tries, expected",
    [
        ("a", [], 3, "a"),
        ("a", ["a"], 3, "b"),
        ("a", ["a", "b"], 3, "c"),
        ("a", ["a", "b", "c"], 3, None),  # out of tries
        ("a", ["a", "b", "c"], 4, "d"),
        ("a", ["a", "b", "c", "d"], 9, None),  # every replica tried
        ("c", ["c"], 3, "d"),  # clockwise from the key
        ("c", ["c", "d"], 3, "a"),  # wrapping around
        ("a", ["b"], 3, "a"),
        ("a", ["a"], 1, None),
        ("a", [], 0, None),
    ],
)
def test_next_replica(key: str, tried: list[str], max_tries: int, expected: str | None) -> None:
    assert retry.next_replica(RING, key, tried, max_tries) == expected


def test_next_replica_on_an_empty_ring_gives_up() -> None:
    assert retry.next_replica(InOrder([]), "a", [], 3) is None


@pytest.mark.parametrize(
    "sent_before, body_kept, expected",
    [
        (False, False, True),  # nothing went out yet
        (False, True, True),
        (True, True, True),  # replayed from the kept body
        (True, False, False),  # part of a body too large to keep went to a replica that failed
    ],
)
def test_may_resend(sent_before: bool, body_kept: bool, expected: bool) -> None:
    assert retry.may_resend(sent_before, body_kept) is expected
