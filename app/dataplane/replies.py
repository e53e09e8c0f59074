"""The contract's error bodies, as the data plane sends them."""

from __future__ import annotations

import json


def failure_body(message: str) -> bytes:
    """The contract's error body, rendered once per distinct message."""
    return json.dumps({"message": f"<Error> {message}", "status": "failure"}).encode()


def too_large(limit: int) -> bytes:
    """The 413 body for a body limit."""
    return failure_body(f"Request body exceeds {limit} bytes")
