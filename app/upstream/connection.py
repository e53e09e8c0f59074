"""A streaming keep-alive connection to a replica: the response goes to a sink piece by piece.

The one upstream connection of the LB: a sink (a proxied exchange, or `UpstreamPool.request`'s collector
for probes) is bound to it for one response and gets the parser's callbacks forwarded: head, body
pieces, end, or an error. Flow control goes both ways: the sink can pause reading this connection (the
client is slow), and this connection tells the sink when its own send buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from mypy_extensions import trait

from app.upstream.errors import (
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
    closed_early,
)
from app.upstream.headers import RESPONSE_HOP_BY_HOP

if TYPE_CHECKING:
    from app.upstream.pool import UpstreamPool

logger = logging.getLogger(__name__)


@trait
class ResponseSink(Protocol):
    """What a streaming connection reports to the exchange bound to it.

    A Protocol for the type checker, and a mypyc trait: a compiled class that names it as a base (the
    exchange, the pool's Collector) is called through a native vtable, anything else as any Python object.
    """

    def on_response_head(
        self, status: int, header_lines: list[bytes], length: int | None, chunked: bool
    ) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self) -> None: ...
    def on_upstream_error(self, exc: UpstreamError) -> None: ...
    def on_upgraded(self, header_lines: list[bytes], upgrade: bytes, leftover: bytes) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def on_tunnel_closed(self) -> None: ...
    def on_upstream_writable(self, writable: bool) -> None: ...
    def flush(self) -> None: ...


@trait
class UpstreamSide(Protocol):
    """What an exchange needs from the replica connection bound to it (a Protocol and a mypyc trait)."""

    request_done: bool  # the whole request is written: the connection may be reused after the response

    def bind(self, sink: ResponseSink, head: bool) -> None: ...
    def unbind(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...


class StreamConnection(UpstreamSide):
    """One keep-alive TCP connection to a replica whose responses stream to a bound sink.

    An asyncio protocol by its methods, not by inheritance, so that it compiles to a native class (its only
    base is its seam, a mypyc trait).
    """

    __slots__ = (
        "_chunked",
        "_close",
        "_head",
        "_headers",
        "_keep_alive",
        "_last_activity",
        "_length",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_received",
        "_served",
        "_sink",
        "_status",
        "_timer",
        "_transport",
        "_tunnel",
        "_upgrade",
        "request_done",
    )

    _transport: asyncio.Transport

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._parser = HttpResponseParser(self)
        self._sink: ResponseSink | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._served = self._received = self._head = self._tunnel = self._paused = False
        self._keep_alive = False
        self._status = 0
        self._headers: list[bytes] = []  # end-to-end headers, already framed: name, ": ", value, CRLF
        self._length: int | None = None
        self._chunked = False
        self._upgrade = b""
        self._close = b""  # the response's Connection header, lower-cased (judges a HEAD answer's keep-alive)
        self.request_done = False  # set by the sink once the whole request body is written

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is not an asyncio.Transport subclass: cast)."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the parser (or pass tunnel bytes through); flush what the sink collected once per read."""
        sink = self._sink
        if sink is None:
            self.abort()  # bytes nobody asked for: the framing can no longer be trusted
            return
        if self._tunnel:
            sink.on_tunnel_data(data)
            return
        self._received = True
        self._last_activity = self._loop.time()
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as exc:
            if self._status == 101 and self._sink is sink:
                self._start_tunnel(sink, data[exc.args[0] :])
                return
            self._fail(UpstreamResetError(f"{self._pool.address} switched protocols unasked"))
            return
        except HttpParserError as exc:
            self._fail(UpstreamResetError(f"malformed response from {self._pool.address}: {exc!r}"))
            return
        if self._sink is not None:
            self._sink.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Settle the bound exchange: a close-delimited body ends, anything else is an error."""
        self._cancel_timer()
        self._pool.forget(self)
        sink, self._sink = self._sink, None
        if sink is None:
            return
        if self._tunnel:
            sink.on_tunnel_closed()
        elif self._status and self._length is None and not self._chunked and exc is None:
            sink.on_response_end()  # no length, not chunked: the body ran until EOF
        else:
            unanswered = not self._received
            reset = isinstance(exc, (ConnectionResetError, BrokenPipeError))
            error = closed_early(self._pool.address, self._served and unanswered, reset and unanswered)
            sink.on_upstream_error(error)

    def eof_received(self) -> bool | None:
        """The replica half-closed: let the transport close (connection_lost settles the sink)."""
        return None

    def pause_writing(self) -> None:
        """The replica's receive window is full: stop reading the client's body."""
        if self._sink is not None:
            self._sink.on_upstream_writable(False)

    def resume_writing(self) -> None:
        """The replica reads again."""
        if self._sink is not None:
            self._sink.on_upstream_writable(True)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep end-to-end headers; note the framing."""
        if self._status:
            return  # a chunked trailer: nowhere to put it once the head is gone
        lowered = name.lower()
        if lowered in RESPONSE_HOP_BY_HOP:
            if lowered == b"transfer-encoding":
                self._chunked = True
            elif lowered == b"upgrade":
                self._upgrade = value
            elif lowered == b"connection":
                self._close = value.lower()
            return
        if lowered == b"content-length":
            self._length = int(value)  # llhttp has validated it
            return
        self._headers += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        """Hand the head to the sink; skip interim 1xx answers; HEAD ends here."""
        parser = self._parser
        status = parser.get_status_code()
        if status < 200 and status != 101:
            self._headers, self._length, self._chunked = [], None, False
            return
        self._status = status
        if self._head:
            # llhttp expects a body until EOF when a HEAD answer has no length: judge keep-alive without it.
            if parser.get_http_version() == "1.1":
                self._keep_alive = b"close" not in self._close
            else:
                self._keep_alive = b"keep-alive" in self._close
        else:
            self._keep_alive = parser.should_keep_alive()  # only valid inside the callback
        sink = self._sink
        if sink is None:
            self.abort()  # a response nobody asked for (e.g. a 408 after a complete one): never reuse
            return
        if status == 101:
            return
        sink.on_response_head(status, self._headers, self._length, self._chunked)
        if self._head:
            # llhttp would wait for the announced body: a HEAD answer has none.
            self._parser = HttpResponseParser(self)
            self._finish()

    def on_body(self, body: bytes) -> None:
        """Stream a (de-chunked) piece on."""
        sink = self._sink
        if sink is not None:
            sink.on_response_body(body)
        elif self._head:
            self.close()  # a HEAD answer sent a body after all: its framing is suspect, never reuse it

    def on_message_complete(self) -> None:
        """The response is complete: the connection goes back to the pool, then the sink hears of it."""
        if self._status and self._status != 101 and self._sink is not None:
            self._finish()

    # -- used by the pool and the exchange -------------------------------------------------------

    def bind(self, sink: ResponseSink, head: bool) -> None:
        """Make `sink` the receiver of the next response (before writing its request)."""
        self._sink = sink
        self._head = head
        self._status = 0
        self._headers = []
        self._length = None
        self._chunked = self._received = self.request_done = False
        self._upgrade = self._close = b""
        if self._paused:
            self.resume_reading()
        self._last_activity = now = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._pool.read_timeout, self._check_timeout)

    def unbind(self) -> None:
        """The exchange gives up (client gone, error): the connection state is unknown, drop it."""
        self._sink = None
        self.abort()

    def write(self, data: bytes) -> None:
        """Send request bytes (or tunnel bytes)."""
        self._transport.write(data)

    def write_eof(self) -> None:
        """Half-close the tunnel towards the replica (the client closed its side)."""
        if self._transport.can_write_eof():
            self._transport.write_eof()

    def pause_reading(self) -> None:
        """The client cannot take more: leave the replica's bytes in the kernel."""
        self._paused = True
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        """The client drained its buffer."""
        self._paused = False
        self._last_activity = self._loop.time()
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def writable(self) -> bool:
        """Whether the replica is taking bytes now (no backlog above the high-water mark)."""
        return self._transport.get_write_buffer_size() < 65536

    def is_usable(self) -> bool:
        """Whether an idle connection can take a request (the replica may have closed it meanwhile)."""
        return not self._transport.is_closing()

    def close(self) -> None:
        """Close gracefully (idle, or after a response that cannot be followed)."""
        self._transport.close()

    def abort(self) -> None:
        """Drop the connection now."""
        self._transport.abort()

    # -- internals -------------------------------------------------------------------------------

    def _finish(self) -> None:
        sink, self._sink = self._sink, None
        self._served = True
        assert sink is not None
        sink.flush()
        if self._paused:
            self.resume_reading()  # an idle connection must read, to notice the replica closing it
        if self._keep_alive and self.request_done and not self._transport.get_write_buffer_size():
            self._pool.release(self)
        else:
            self.close()
        sink.on_response_end()

    def _start_tunnel(self, sink: ResponseSink, leftover: bytes) -> None:
        self._tunnel = True
        self._cancel_timer()
        sink.on_upgraded(self._headers, self._upgrade, leftover)

    def _fail(self, exc: UpstreamError) -> None:
        sink, self._sink = self._sink, None
        self.abort()
        if sink is not None:
            sink.on_upstream_error(exc)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        # One lazily re-armed timer per connection instead of one TimerHandle per request.
        self._timer = None
        if self._sink is None or self._tunnel:
            return
        timeout = self._pool.read_timeout
        if self._paused:  # waiting on the client, not on the replica
            self._last_activity = self._loop.time()
        remaining = self._last_activity + timeout - self._loop.time()
        if remaining > 0:
            self._timer = self._loop.call_later(remaining, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"{self._pool.address} sent nothing for {timeout} s"))
