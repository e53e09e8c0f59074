"""The seams inside the data plane, named: what each side of a proxied request needs from the other.

A client connection (app.dataplane.server) drives an `Exchange` per request; an exchange answers through
its `ClientSide` and, when proxied, sends through an `UpstreamSide`, which reports back to it as a
`ResponseSink` (those two are defined by app.upstream.connection, the layer below, and named here too).
Each side is written and tested against these protocols, not against the other's class, so neither
imports the other.

Each is a typing.Protocol for the type checker and a mypyc trait for the compiled hot path: a compiled
class that names the seam as a base is called through a native vtable (as fast as calling the class
itself); any other object that fits, such as a test's stand-in, is called as a Python object.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from mypy_extensions import trait

from app.dataplane.http1 import RequestHead
from app.upstream.connection import ResponseSink, UpstreamSide

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

__all__ = ["AsgiClientSide", "ClientSide", "Exchange", "ResponseSink", "Tunnel", "UpstreamSide"]


@trait
class Exchange(Protocol):
    """One request on a client connection (proxied, or served by the LB's own app)."""

    head: RequestHead
    body_done: bool
    leftover: bytes  # bytes the client sent after an Upgrade request, for the tunnel
    status: int  # what the client gets (0 until decided)
    began: float  # perf_counter() at the head, when the access log is on
    logged: bool  # its access-log line is written

    @property
    def started(self) -> bool: ...
    @property
    def upstream(self) -> str: ...
    def start(self) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...
    def on_client_writable(self, writable: bool) -> None: ...
    def on_client_lost(self) -> None: ...


@trait
class Tunnel(Exchange, Protocol):
    """An exchange that became a tunnel (after a 101): raw bytes both ways."""

    def on_client_data(self, data: bytes) -> None: ...
    def on_client_eof(self) -> None: ...


@trait
class ClientSide(Protocol):
    """What an exchange needs from the client connection it answers on."""

    keep_alive: bool  # False: the connection closes after the current response
    writing_paused: bool  # the client takes no more bytes for now
    paused: set[str]  # why reading the client is paused (empty: reading)
    ip: bytes  # the client's address, for X-Forwarded-For
    peer: tuple[str, int] | None

    def write(self, data: bytes) -> None: ...
    def error_bytes(self, status: int, body: bytes) -> bytes: ...
    def finish(self, exchange: Exchange) -> None: ...
    def start_tunnel(self, exchange: Tunnel) -> None: ...
    def pause_reading(self, reason: str) -> None: ...
    def resume_reading(self, reason: str) -> None: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...


@trait
class AsgiClientSide(ClientSide, Protocol):
    """What the ASGI bridge needs besides: uvicorn's config and state, to run the LB's own app."""

    config: Config
    server_state: ServerState
    app_state: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    sockname: tuple[str, int] | None

    async def drain(self) -> None: ...
