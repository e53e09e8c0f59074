"""Replica lifecycle events as logfmt lines: `event=down replica="Server 2" reason="process exited"`.

One format for every transition (spawning, up, down, replacing, removed, start_failed, ...) so a log
shipper, or grep, can follow a replica's life without parsing prose.
"""

from __future__ import annotations

import json
import logging

logger = logging.getLogger(__name__)


def _value(value: object) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if text and all(c.isalnum() or c in "._:-/" for c in text):
        return text
    return json.dumps(text)


def log_event(level: int, event: str, replica: str, **fields: object) -> None:
    """Log one lifecycle event of `replica` with its fields (None values are left out)."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={event}", f"replica={_value(replica)}"]
    parts += [f"{key}={_value(val)}" for key, val in fields.items() if val is not None]
    logger.log(level, " ".join(parts))
