"""Lean pooled HTTP/1.1 client on asyncio + httptools: the proxy's upstream leg (hot path).

One `UpstreamPool` per replica keeps a LIFO stack of idle keep-alive connections. A request takes one
connection (idle or new), writes the whole request in one `transport.write`, and waits on one Future that
the connection's callbacks resolve: no Task, no StreamReader, no per-request timer object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from app.dataplane.errors import (
    StaleConnectionError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
    closed_early,
)
from app.dataplane.http1 import BODY_METHODS, HOP_BY_HOP_HEADERS
from app.dataplane.upstream_stream import StreamConnection

logger = logging.getLogger(__name__)

__all__ = [
    "StaleConnectionError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResetError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "HOP_BY_HOP_HEADERS",
    "encode_request",
]

# Safe to send twice: a request that died on a stale keep-alive connection is retried once.
IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))


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
        parts.append(name)
        parts.append(b": ")
        parts.append(value)
        parts.append(b"\r\n")
    if body or method in BODY_METHODS:
        parts.append(b"content-length: %d\r\n\r\n" % len(body))
        parts.append(body)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    """One keep-alive TCP connection; httptools callbacks fill the current response."""

    __slots__ = (
        "_body",
        "_connection",
        "_framed",
        "_head",
        "_headers",
        "_keep_alive",
        "_last_activity",
        "_lost",
        "_loop",
        "_parser",
        "_pool",
        "_received",
        "_response",
        "_served",
        "_status",
        "_timer",
        "_transport",
        "_waiter",
    )

    _transport: asyncio.Transport  # set by connection_made, before the pool ever sees the connection

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._parser = HttpResponseParser(self)
        self._lost: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._served = False
        self._head = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._response: UpstreamResponse | None = None
        self._framed = False
        self._keep_alive = False
        self._received = False
        self._connection = b""

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport: every request is written to it."""
        # uvloop's TCPTransport is not an asyncio.Transport subclass: cast, don't isinstance-check.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the parser; resolve the waiter once the response is complete."""
        if self._waiter is None:
            # Bytes nobody asked for (e.g. a 408 before closing): the framing can no longer be trusted.
            self.close()
            return
        self._received = True
        self._last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._fail(UpstreamResetError(f"malformed response from {self._pool.address}: {exc!r}"))
            self.abort()
            return
        if self._response is not None:
            self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        """Settle the pending request (close-delimited body, stale connection or reset) and leave the pool."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pool._forget(self)
        if not self._lost.done():
            self._lost.set_result(None)
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if waiter.done():
            return
        if self._status and not self._framed and exc is None:
            # No content-length and not chunked: the body is everything up to EOF (HTTP/1.0 style).
            waiter.set_result(UpstreamResponse(self._status, self._headers, b"".join(self._body)))
        else:
            waiter.set_exception(closed_early(self._pool.address, self._served and not self._received))

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """Bytes after a complete response put the connection out of step: never reuse it."""
        if self._response is not None:
            self._keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep end-to-end headers; note whether the body is framed."""
        if self._status:
            # A chunked trailer: the de-chunked body is re-framed by length, so there is nowhere to put it.
            return
        lowered = name.lower()
        if lowered in HOP_BY_HOP_HEADERS:
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                self._framed = True
            elif lowered == b"connection":
                self._connection = value.lower()
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Record status and keep-alive; a HEAD response ends here (httptools has no HEAD mode)."""
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 or self._response is not None:
            return
        self._status = status
        if self._head:
            # llhttp expects a body until EOF when there is no length, so judge keep-alive without it.
            if parser.get_http_version() == "1.1":
                self._keep_alive = b"close" not in self._connection
            else:
                self._keep_alive = b"keep-alive" in self._connection
            self._response = UpstreamResponse(status, self._headers, b"")
        else:
            # Only valid inside the callback: llhttp resets its flags once the message completes.
            self._keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        """Collect body pieces (already de-chunked by llhttp)."""
        self._body.append(body)

    def on_message_complete(self) -> None:
        """Freeze the final response; forget what an interim 1xx response left behind."""
        if self._response is not None:
            return
        if self._status:
            body = self._body
            self._response = UpstreamResponse(self._status, self._headers, b"".join(body) if body else b"")
        else:
            self._headers = []
            self._framed = False
            self._connection = b""

    # -- used by UpstreamPool --------------------------------------------------------------------

    def send(self, data: bytes, head: bool) -> asyncio.Future[UpstreamResponse]:
        """Write one request and return the Future its response will resolve."""
        loop = self._loop
        waiter: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._waiter = waiter
        self._head = head
        self._status = 0
        self._headers = []
        self._body = []
        self._response = None
        self._framed = self._received = False
        self._connection = b""
        self._last_activity = now = loop.time()
        if self._timer is None:
            # One lazily re-armed timer per connection instead of one TimerHandle per request.
            self._timer = loop.call_at(now + self._pool._read_timeout, self._check_timeout)
        self._transport.write(data)
        return waiter

    def is_usable(self) -> bool:
        """Whether an idle connection can take a request (the replica may have closed it meanwhile)."""
        return not self._transport.is_closing()

    def close(self) -> asyncio.Future[None]:
        """Close gracefully; the returned Future resolves once the connection is gone."""
        self._transport.close()
        return self._lost

    def give_up(self, waiter: asyncio.Future[UpstreamResponse]) -> None:
        """Drop the connection if `waiter` is still pending: a late response would desynchronise it."""
        if self._waiter is waiter:
            self._waiter = None
            self.abort()

    def abort(self) -> None:
        """Drop the connection now: its state is unknown (timeout, cancellation, garbage)."""
        self._transport.abort()

    # -- internals -------------------------------------------------------------------------------

    def _finish(self) -> None:
        waiter, response = self._waiter, self._response
        assert waiter is not None and response is not None
        self._waiter = None
        self._served = True
        if self._head:
            # The old parser still waits for the HEAD response's announced body.
            self._parser = HttpResponseParser(self)
            if self._body:
                self._keep_alive = False  # the replica sent a body anyway: its framing is suspect
        if waiter.done():
            # The caller was cancelled mid-response; give_up() already let go of this connection.
            self.close()
            return
        waiter.set_result(response)
        # An early answer (e.g. 413) can come while the request body is still queued: that
        # connection would feed the rest of the old body to the next request's parser.
        if self._keep_alive and not self._transport.get_write_buffer_size():
            self._pool._release(self)
        else:
            self.close()

    def _fail(self, exc: UpstreamError) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _check_timeout(self) -> None:
        self._timer = None
        if self._waiter is None:
            return
        timeout = self._pool._read_timeout
        remaining = self._last_activity + timeout - self._loop.time()
        if remaining > 0:
            self._timer = self._loop.call_later(remaining, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"{self._pool.address} sent nothing for {timeout} s"))
        self.abort()


class UpstreamPool:
    """Keep-alive connections to one replica."""

    __slots__ = (
        "_closed",
        "_connect_timeout",
        "_host",
        "_idle",
        "_idle_streams",
        "_max_idle",
        "_port",
        "_read_timeout",
        "address",
        "in_flight",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 0.5,
        read_timeout: float = 10.0,
        max_idle: int = 64,
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        # LIFO: the most recently used connection is the least likely to have been closed by the replica.
        self._idle: list[_Connection] = []
        self._idle_streams: list[StreamConnection] = []
        self._closed = False
        self.address = f"{host}:{port}"
        # Requests the proxy has sent here and not yet finished (drain and bounded loads read it).
        self.in_flight = 0

    @property
    def closed(self) -> bool:
        """True after close(): requests fail fast with UpstreamConnectError."""
        return self._closed

    @property
    def idle_count(self) -> int:
        """Idle keep-alive connections held now (for metrics and tests)."""
        return len(self._idle) + len(self._idle_streams)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        """Send one request and return the whole response.

        `headers` must already be filtered (include Host; no content-length, transfer-encoding or
        connection): content-length is added here from `body`.
        """
        if self._closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        self.in_flight += 1  # counted inline, not in a wrapper coroutine: this is the hot path
        try:
            data = encode_request(method, target, headers, body)
            head = method == b"HEAD"
            conn = self._take_idle()
            if conn is not None:
                waiter = conn.send(data, head)
                try:
                    return await waiter
                except StaleConnectionError:
                    if method not in IDEMPOTENT_METHODS:
                        raise
                    logger.debug("%s closed an idle connection; retrying %s once", self.address, method)
                except asyncio.CancelledError:
                    conn.give_up(waiter)
                    raise
            conn = await self._connect()
            waiter = conn.send(data, head)
            try:
                return await waiter
            except asyncio.CancelledError:
                conn.give_up(waiter)
                raise
        finally:
            self.in_flight -= 1

    async def refuses(self) -> bool:
        """Whether a fresh connect is refused now (the replica is gone): a probe, no request is sent."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            return True
        writer.close()
        return False

    async def close(self) -> None:
        """Close idle connections; in-flight ones close when their response completes."""
        self._closed = True
        idle, self._idle = self._idle, []
        streams, self._idle_streams = self._idle_streams, []
        for stream in streams:
            stream.close()
        lost = [conn.close() for conn in idle]
        if lost:
            await asyncio.wait(lost)

    def take_stream(self) -> StreamConnection | None:
        """An idle streaming connection, or None (then `connect_stream`): no await on the hot path."""
        idle = self._idle_streams
        while idle:  # _pop_usable, inlined: once per proxied request
            conn = idle.pop()
            if conn.is_usable():
                return conn
            conn.close()
        return None

    async def connect_stream(self) -> StreamConnection:
        """A new streaming connection (UpstreamConnectError if refused, unreachable or closed)."""
        if self._closed:
            raise UpstreamConnectError(f"pool for {self.address} is closed")
        loop = asyncio.get_running_loop()
        return await self._open(lambda: StreamConnection(self, loop))

    def _release_stream(self, conn: StreamConnection) -> None:
        self._park(conn, self._idle_streams)

    def _forget_stream(self, conn: StreamConnection) -> None:
        _unpark(conn, self._idle_streams)

    def _take_idle(self) -> _Connection | None:
        return _pop_usable(self._idle)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        return await self._open(lambda: _Connection(self, loop))

    async def _open(self, factory: Callable[[], _Conn]) -> _Conn:
        try:
            async with asyncio.timeout(self._connect_timeout):
                loop = asyncio.get_running_loop()
                # StreamConnection is a protocol by its methods only (see its docstring): cast for typing.
                protocol_factory = cast(Callable[[], asyncio.Protocol], factory)
                _, protocol = await loop.create_connection(protocol_factory, self._host, self._port)
                conn = cast(_Conn, protocol)
        except OSError as exc:  # TimeoutError and socket.gaierror are OSErrors too
            raise UpstreamConnectError(f"cannot connect to {self.address}: {exc!r}") from exc
        if not conn.is_usable():
            raise UpstreamConnectError(f"{self.address} closed the connection as soon as it was opened")
        return conn

    def _release(self, conn: _Connection) -> None:
        self._park(conn, self._idle)

    def _forget(self, conn: _Connection) -> None:
        _unpark(conn, self._idle)

    def _park(self, conn: _Conn, idle: list[_Conn]) -> None:
        """Keep a finished connection for reuse, unless the pool is closed or holds enough already."""
        if self._closed or len(idle) >= self._max_idle:
            conn.close()
        else:
            idle.append(conn)


_Conn = TypeVar("_Conn", _Connection, StreamConnection)


def _unpark(conn: _Conn, idle: list[_Conn]) -> None:
    if conn in idle:
        idle.remove(conn)


def _pop_usable(idle: list[_Conn]) -> _Conn | None:
    """The most recently used idle connection the replica has not closed (LIFO)."""
    while idle:
        conn = idle.pop()
        if conn.is_usable():
            return conn
        conn.close()
    return None
