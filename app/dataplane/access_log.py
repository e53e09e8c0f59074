"""LB_ACCESS_LOG=true: one logfmt line per request, proxied or the LB's own, when its response is done.

    client=127.0.0.1 method=GET target="/home?id=7" status=200 replica="Server 1" ms=0.412

`replica` is absent when the LB answered itself (its own paths, or an error of its own such as a 503);
`outcome=broken` marks a response cut off after it started (the replica failed mid-body) and
`outcome=tunnel` an Upgrade passed through. Off by default: formatting a line costs more than the rest
of a proxied request, which is why the hot path checks one attribute and nothing else when it is off.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING

from app.logfmt import logfmt

if TYPE_CHECKING:
    from app.dataplane.seams import Exchange

logger = logging.getLogger(__name__)


class AccessLog:
    """Writes the access-log line of each finished exchange."""

    def log(self, client: tuple[str, int] | None, exchange: Exchange, outcome: str | None = None) -> None:
        """One line for `exchange`, whose response is complete (or ended as `outcome` says)."""
        head = exchange.head
        line = logfmt(
            client=client[0] if client else "-",
            method=head.method.decode("latin-1"),
            target=head.target.decode("latin-1"),
            status=exchange.status or "-",
            replica=exchange.upstream or None,
            ms=(perf_counter() - exchange.began) * 1000.0,
            outcome=outcome,
        )
        logger.info(line)


def make_access_log(enabled: bool) -> AccessLog | None:
    """An AccessLog when LB_ACCESS_LOG is on and INFO lines are kept; None costs nothing per request."""
    return AccessLog() if enabled and logger.isEnabledFor(logging.INFO) else None
