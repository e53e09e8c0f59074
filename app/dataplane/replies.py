"""The contract's error answer on raw ASGI: what the data path and the body limits send."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


def failure_body(message: str) -> bytes:
    """The contract's error body, rendered once per distinct message."""
    return json.dumps({"message": f"<Error> {message}", "status": "failure"}).encode()


async def reply(send: Send, status: int, body: bytes) -> None:
    """A complete JSON answer in two ASGI messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
