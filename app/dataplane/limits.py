"""Request body limits on raw ASGI: a declared length is checked before any byte is read, a streamed
(chunked) body is counted and cut off at the limit, so no path buffers more than its limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.dataplane.replies import Send, failure_body, reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


def too_large(limit: int) -> bytes:
    """The 413 body for a limit."""
    return failure_body(f"Request body exceeds {limit} bytes")


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length header as a number; None without one (chunked or no body)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's parser rejects malformed lengths before we are called
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def limit_body(scope: Scope, receive: Receive, send: Send, limit: int) -> Receive | None:
    """Read a request's body up to `limit` and return a `receive` that replays it.

    None means the body was too large and a 413 has been sent. Bodies under the limit are small (the
    limit is the control plane's), so buffering them before the app runs costs nothing worth saving.
    """
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    length = declared_length(headers)
    if length is not None and length > limit:
        await reply(send, 413, too_large(limit))
        return None
    if length is None and not any(name == b"transfer-encoding" for name, _ in headers):
        return receive  # no body follows
    body = await read_body(receive, limit)
    if body is None:
        await reply(send, 413, too_large(limit))
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()  # later calls wait for the disconnect, as the server's own would
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
