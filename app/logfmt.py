"""logfmt (`key=value key2="two words"`): the one format of the LB's structured log lines.

Lifecycle events (app.control.lifecycle_log) and the access log (app.dataplane.access_log) both use it, so a
log shipper, or grep, reads every line the same way.
"""

from __future__ import annotations

import json


def logfmt_value(value: object) -> str:
    """A value as logfmt writes it: bare when it is one safe word, else a JSON string."""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if text and all(c.isalnum() or c in "._:-/" for c in text):
        return text
    return json.dumps(text)


def logfmt(**fields: object) -> str:
    """`key=value ...` in the given order; None values are left out."""
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items() if value is not None)
