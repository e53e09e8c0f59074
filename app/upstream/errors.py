"""Why an upstream call failed: the proxy picks retry, 502, 503 or 504 by the class."""

from __future__ import annotations


class UpstreamError(Exception):
    """Any failure to get a response from a replica."""


class UpstreamConnectError(UpstreamError):
    """No byte of the request reached the replica (refused, reset on connect, connect timeout)."""


class UpstreamResetError(UpstreamError):
    """The connection broke after the request was (maybe) sent and before a full response."""


class UpstreamTimeout(UpstreamError):
    """The replica accepted the request but did not answer within read_timeout."""


class StaleConnectionError(UpstreamResetError):
    """A reused keep-alive connection died before any response byte: the replica closed it while idle."""


class UnreadRequestError(UpstreamResetError):
    """The replica reset the connection before any byte of answer: a socket closed with bytes still unread
    sends a reset instead of an orderly close, so the replica never read the whole request (e.g. it was
    killed with the connection still in its listen queue)."""


def closed_early(address: str, reused_and_unanswered: bool, reset_unanswered: bool) -> UpstreamResetError:
    """The error for a replica connection that closed before a full response: a reused connection that
    never answered was stale (safe to retry anywhere); a reset before any answer left the request unread;
    anything else (an orderly close after reading it, a break mid-response) may have been processed."""
    if reused_and_unanswered:
        return StaleConnectionError(f"{address} closed a reused connection before answering")
    if reset_unanswered:
        return UnreadRequestError(f"{address} reset the connection before reading the whole request")
    return UpstreamResetError(f"{address} closed the connection before a full response")

