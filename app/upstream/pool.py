"""Keep-alive connections to one replica, and the requests in flight to it.

One `UpstreamPool` per replica keeps a LIFO stack of idle `StreamConnection`s. The data plane binds an
exchange to one (`take` on the hot path: no await; `connect` when none is idle); `request` sends one
whole request and collects the whole response on the same connections (health probes, the LB's own
forwarding). The pool is the one owner of `in_flight`: exchanges `enter` and `leave`, and drain and
bounded loads read it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from app.upstream.connection import ResponseSink, StreamConnection
from app.upstream.errors import (
    StaleConnectionError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
)
from app.upstream.headers import BODY_METHODS, IDEMPOTENT_METHODS

logger = logging.getLogger(__name__)

__all__ = [
    "StaleConnectionError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResetError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "encode_request",
]


@dataclass(slots=True)
class UpstreamResponse:
    """A complete, de-chunked response without hop-by-hop headers or content-length."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def encode_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """Serialise a request into one buffer so it leaves in one write (one syscall, one TCP segment)."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    if body or method in BODY_METHODS:
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
        parts.append(body)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


class Collector(ResponseSink):
    """A response sink that keeps the whole response and resolves a Future with it."""

    def __init__(self, address: str, done: asyncio.Future[UpstreamResponse]) -> None:
        self._address = address
        self._done = done
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    def on_response_head(
        self, status: int, header_lines: list[bytes], length: int | None, chunked: bool
    ) -> None:
        """Keep status and headers (the connection hands them framed: name, ": ", value, CRLF)."""
        self._status = status
        self._headers = [(header_lines[i], header_lines[i + 2]) for i in range(0, len(header_lines), 4)]

    def on_response_body(self, data: bytes) -> None:
        """Keep a piece of the body."""
        self._body.append(data)

    def on_response_end(self) -> None:
        """Resolve with the whole response."""
        if not self._done.done():
            self._done.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))

    def on_upstream_error(self, exc: UpstreamError) -> None:
        """Fail with the connection's error."""
        if not self._done.done():
            self._done.set_exception(exc)

    def on_upgraded(self, header_lines: list[bytes], upgrade: bytes, leftover: bytes) -> None:
        """Nobody asked to switch protocols: an error."""
        self.on_upstream_error(UpstreamResetError(f"{self._address} switched protocols unasked"))

    def on_tunnel_data(self, data: bytes) -> None:
        """Not a tunnel: nothing to do."""

    def on_tunnel_closed(self) -> None:
        """Not a tunnel: nothing to do."""

    def on_upstream_writable(self, writable: bool) -> None:
        """The request is written whole: no body to pause."""

    def flush(self) -> None:
        """Everything is kept until the end."""


class UpstreamPool:
    """Keep-alive connections to one replica."""

    __slots__ = (
        "_closed",
        "_connect_timeout",
        "_host",
        "_idle",
        "_max_idle",
        "_port",
        "address",
        "in_flight",
        "read_timeout",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 0.5,
        read_timeout: float = 10.0,
        max_idle: int = 256,  # as LB_MAX_IDLE_CONNECTIONS
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout  # silence from the replica this long fails the request
        self._max_idle = max_idle
        # LIFO: the most recently used connection is the least likely to have been closed by the replica.
        self._idle: list[StreamConnection] = []
        self._closed = False
        self.address = f"{host}:{port}"
        # Requests sent here and not finished: written by enter/leave only (drain, bounded loads read it).
        self.in_flight = 0

    @property
    def closed(self) -> bool:
        """True after close(): requests fail fast with UpstreamConnectError."""
        return self._closed

    @property
    def idle_count(self) -> int:
        """Idle keep-alive connections held now (for metrics and tests)."""
        return len(self._idle)

    def enter(self) -> None:
        """A request to this replica begins."""
        self.in_flight += 1

    def leave(self) -> None:
        """A request to this replica is over (answered, failed or abandoned)."""
        self.in_flight -= 1

    def take(self) -> StreamConnection | None:
        """An idle connection the replica has not closed (LIFO), or None (then `connect`): no await."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.is_usable():
                return conn
            conn.close()
        return None

    async def connect(self) -> StreamConnection:
        """A new connection (UpstreamConnectError if refused, unreachable or closed)."""
        if self._closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        loop = asyncio.get_running_loop()
        factory = cast(Callable[[], asyncio.Protocol], lambda: StreamConnection(self, loop))
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(factory, self._host, self._port)
        except OSError as exc:  # TimeoutError and socket.gaierror are OSErrors too
            raise UpstreamConnectError(f"cannot connect to {self.address}: {exc!r}") from exc
        # StreamConnection is a protocol by its methods only (see its docstring): cast for typing.
        conn = cast(StreamConnection, protocol)
        if not conn.is_usable():
            raise UpstreamConnectError(f"{self.address} closed the connection as soon as it was opened")
        return conn

    def release(self, conn: StreamConnection) -> None:
        """Keep a finished connection for reuse, unless the pool is closed or holds enough already."""
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    def forget(self, conn: StreamConnection) -> None:
        """A connection closed: never hand it out again."""
        if conn in self._idle:
            self._idle.remove(conn)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        """Send one whole request and return the whole response (probes; not the proxied path).

        `headers` must already be filtered (include Host; no content-length, transfer-encoding or
        connection): content-length is added here from `body`. Only an idempotent request goes on an idle
        connection (and once more on a new one if the replica had closed it); others go on a new one.
        """
        if self._closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        self.enter()
        try:
            data = encode_request(method, target, headers, body)
            head = method == b"HEAD"
            conn = self.take() if method in IDEMPOTENT_METHODS else None
            if conn is not None:
                try:
                    return await self._send(conn, data, head)
                except StaleConnectionError:
                    logger.debug("%s closed an idle connection; retrying %s once", self.address, method)
            return await self._send(await self.connect(), data, head)
        finally:
            self.leave()

    async def _send(self, conn: StreamConnection, data: bytes, head: bool) -> UpstreamResponse:
        done: asyncio.Future[UpstreamResponse] = asyncio.get_running_loop().create_future()
        conn.bind(Collector(self.address, done), head)
        conn.write(data)
        conn.request_done = True
        try:
            return await done
        except asyncio.CancelledError:
            conn.unbind()  # a late response would desynchronise the connection
            raise

    def retune(self, connect_timeout: float, read_timeout: float, max_idle: int) -> None:
        """New timeouts and idle bound from now on (a reload); connections and requests in flight stay."""
        self._connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._max_idle = max_idle

    async def close(self) -> None:
        """Close idle connections; busy ones close when their response completes."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
