"""What to do when a try at a replica fails: the one retry policy of the data plane (pure, no I/O).

HAProxy's `retry-on` and Envoy's retry policy decide the same things: a failure before the replica can
have seen the request (connection refused, or a reset before any answer: a socket closed with the request
unread sends a reset, one that read it closes in order) is retried elsewhere; a failure after it may have
been processed is retried only for a method that is safe to send twice; a timeout is answered, never
retried (the replica may still be working on it). A request that is not safe to send twice goes on a new
connection only (HAProxy's `http-reuse safe`): on a reused one, a replica that closed it while idle and
one that read the request and died look the same, and the second must not see the request repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from app.errors import NoReplicasError
from app.ring.base import Ring
from app.upstream.errors import (
    StaleConnectionError,
    UnreadRequestError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from app.upstream.headers import IDEMPOTENT_METHODS

# What after_failure answers (ints, not an Enum: read once per failed try on the compiled hot path).
NEXT: Final = 0  # try the next replica clockwise (see next_replica)
NEXT_AND_REPORT: Final = 1  # the replica refused the connection: it is gone; report it, then NEXT
SAME_AGAIN: Final = 2  # a reused idle connection was stale: once more to the same replica, on a new one
NOT_TWICE: Final = 3  # the replica may have processed it: answer 502, never send it elsewhere
TIMED_OUT: Final = 4  # answer 504


def may_reuse(method: bytes) -> bool:
    """Whether a request may go on an idle keep-alive connection (else on a new one)."""
    return method in IDEMPOTENT_METHODS


def after_failure(exc: UpstreamError, method: bytes) -> int:
    """The step after a failed try at a replica, before any response byte reached the client."""
    if isinstance(exc, UpstreamTimeout):
        return TIMED_OUT
    if isinstance(exc, UpstreamConnectError):
        return NEXT_AND_REPORT
    if isinstance(exc, UnreadRequestError):
        return NEXT  # a reset, not a close: the replica never read the whole request
    if method not in IDEMPOTENT_METHODS:
        return NOT_TWICE  # a reset mid-request, or a response that made no sense
    return SAME_AGAIN if isinstance(exc, StaleConnectionError) else NEXT


def counts_as_error(exc: UpstreamError, method: bytes) -> bool:
    """Whether the failure counts against the replica (a stale idle connection retried unseen does not)."""
    return not (isinstance(exc, StaleConnectionError) and method in IDEMPOTENT_METHODS)


def next_replica(ring: Ring, key: str, tried: Sequence[str], max_tries: int) -> str | None:
    """The first replica clockwise from `key` not tried yet, while tries are left; None: give up (503)."""
    if len(tried) >= max_tries:
        return None
    try:
        return next((name for name in ring.successors(key) if name not in tried), None)
    except NoReplicasError:
        return None


def may_resend(sent_before: bool, body_kept: bool) -> bool:
    """Whether a request can go to another connection: nothing of it was sent yet, or its body was kept."""
    return not sent_before or body_kept
