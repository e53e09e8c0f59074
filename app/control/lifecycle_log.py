"""Replica lifecycle events as logfmt lines: `event=down replica="Server 2" reason="process exited"`.

One format for every transition (spawning, up, down, replacing, removed, start_failed, ...) so a log
shipper, or grep, can follow a replica's life without parsing prose.
"""

from __future__ import annotations

import logging

from app.logfmt import logfmt

logger = logging.getLogger(__name__)


def log_event(level: int, event: str, replica: str, **fields: object) -> None:
    """Log one lifecycle event of `replica` with its fields (None values are left out)."""
    if not logger.isEnabledFor(level):
        return
    logger.log(level, logfmt(event=event, replica=replica, **fields))
