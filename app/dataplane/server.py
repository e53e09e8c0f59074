"""The client side of the data plane: an asyncio Protocol with httptools, one per client connection.

Proxied requests become a ProxyExchange right in the parser's callbacks (no ASGI scope, no Task); the
LB's own paths go to the FastAPI app through a minimal ASGI bridge, so /docs, /add, /vote are unchanged.
Requests on one connection are answered in order: a pipelined request waits (and reading pauses) until
the one before it is answered. The limits nginx and HAProxy have live here: header read timeout, idle
keep-alive timeout, maximum header size, maximum concurrent connections (refused at once beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sys
import termios
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote

import uvicorn
from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser, parse_url

from app.dataplane.asgi_bridge import AsgiExchange
from app.dataplane.exchange import ProxyExchange
from app.dataplane.front import Front
from app.dataplane.http1 import RequestHead, error_response
from app.dataplane.redirect import NOT_REDIRECTED, RedirectExchange
from app.dataplane.seams import AsgiClientSide, Exchange, Tunnel

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

# A guard on bytes buffered inside the parser before a header line completes (exact sizes are checked
# per header): a single endless header line must not grow memory.
_SEGMENT_SLACK = 64 * 1024
# Lingering close: how long and how much of an unwanted request body we read and discard before closing.
# Enough for a client that sends a whole upload before reading (Python's urllib: 50 MB) to see our 413;
# nginx reads for up to 30 s (lingering_time), with no size bound.
LINGER_SECONDS = 10.0
LINGER_BYTES = 64 * 1024 * 1024


class ClientConnection(AsgiClientSide):
    """One client connection: parse requests, dispatch them in order, enforce the limits.

    An asyncio protocol by its methods, not by inheritance (uvloop and asyncio look the methods up): a
    class with no Python base (its only base is its seam, a mypyc trait) compiles to a native class.
    """

    transport: asyncio.Transport

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        front: Front,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.front = front
        self.limits = front.limits
        self.access_log = front.access_log
        self.parser = HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.ip = b""
        self.keep_alive = True
        self.secure = False  # set by app.dataplane.tls before connection_made: HTTPS/1.1
        self._redirect = False  # LB_HTTPS_REDIRECT, on the public plain-HTTP port
        self.writing_paused = False
        self.paused: set[str] = set()  # why reading the client is paused now (empty: reading)
        self._active: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._current: Exchange | None = None
        self._tunnel: Tunnel | None = None
        self._upgrading: Exchange | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None  # armed while a body is being read
        self._send_timer: asyncio.TimerHandle | None = None  # armed while the client takes nothing
        self._body_seen = 0.0
        self._send_backlog = 0  # bytes waiting for the client when the send timer was (re)armed
        # Timers are armed lazily: a head that arrives in one read, and a keep-alive connection that is
        # busy again before its idle deadline, cost no TimerHandle per request.
        self._head_started = self._idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._pending_error = b""
        self._refused = self._lost = self._in_head = self._head_too_large = self._lingering = False
        self._said_underscore = False  # the dropped-header line is logged once per connection
        self._unlogged = False  # the owner's private port: the forwarding worker logged the request
        self._head_bytes = self._head_raw = self._lingered = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: int | None = None
        self._chunked = self._expect = False

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Refuse at once beyond the connection cap; otherwise start the header clock."""
        self.transport = cast(asyncio.Transport, transport)
        connections = self.server_state.connections
        if len(connections) >= self.limits.max_connections:
            self._refused = True
            self.transport.write(self.front.too_many)
            self.transport.close()
            return
        connections.add(self)  # type: ignore[arg-type]  # uvicorn types it as its own protocols
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
            self.ip = self.peer[0].encode()
        sock = transport.get_extra_info("sockname")
        if isinstance(sock, tuple):
            self.sockname = (str(sock[0]), int(sock[1]))
            if self.sockname[1] == self.front.unlogged_port:
                self._unlogged = True
                self.access_log = None
        self._redirect = (
            self.front.https_port is not None
            and not self.secure
            and (self.sockname is None or self.sockname[1] != self.front.unlogged_port)
        )
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._on_header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell every pending exchange; forget the connection."""
        self._lost = True
        if self._refused:
            return
        self.server_state.connections.discard(self)
        self._cancel_timers()
        if self._send_timer is not None:
            self._send_timer.cancel()
        active, self._active = self._active, None
        if active is not None:
            if self.access_log is not None:
                self._log_access(active, "tunnel" if self._tunnel is not None else "client_closed")
            active.on_client_lost()
        while self._queue:
            self._queue.popleft().on_client_lost()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Feed the parser (or the tunnel)."""
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self._tunnel is not None:
            self._tunnel.on_client_data(data)
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            # The Upgrade request is complete; what follows belongs to the tunnel, once the replica agrees.
            self.pause_reading("upgrade")
            if self._upgrading is not None:
                self._upgrading.leftover = data[exc.args[0] :]
            return
        except HttpParserError:
            self._reject(self.front.header_too_large if self._head_too_large else self.front.malformed)
            return
        if self._in_head:
            self._head_raw += len(data)
            if self._head_raw > self.limits.max_header_bytes + _SEGMENT_SLACK:
                self._reject(self.front.header_too_large)
            elif self._header_timer is None:
                deadline = self._head_started + self.limits.header_timeout
                self._header_timer = self.loop.call_at(deadline, self._on_header_timeout)
        elif self._current is not None:  # in the middle of a body: the next piece must come in time
            self._body_seen = now = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_at(now + self.limits.body_timeout, self._on_body_timeout)

    def eof_received(self) -> bool | None:
        """A half-close: finish what was asked, then close (tunnels pass the EOF on)."""
        if self._lingering:
            return None  # the client is done sending: close now
        if self._tunnel is not None:
            self._tunnel.on_client_eof()
            return True
        if self._active is not None:
            self.keep_alive = False
            return True
        return None

    def pause_writing(self) -> None:
        """The client reads slower than we write: pause the source; it must read again in time."""
        self.writing_paused = True
        if self._send_timer is None:
            self._send_backlog = self._untaken_bytes()
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._on_send_timeout)
        if self._active is not None:
            self._active.on_client_writable(False)

    def resume_writing(self) -> None:
        """The client caught up."""
        self.writing_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        if self._active is not None:
            self._active.on_client_writable(True)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A new request: its header must complete within the header timeout."""
        front = self.front  # a reload swaps the limits and the access log: each request reads them anew
        self.limits = front.limits
        self.access_log = None if self._unlogged else front.access_log
        self._in_head = True
        self._head_bytes = self._head_raw = 0
        self._url = b""
        self._headers = []
        self._length = None
        self._chunked = self._expect = False
        self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        """The request target (may come in pieces)."""
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large_error()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect headers, lower-cased; note the framing."""
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large_error()
        if b"_" in name:
            self._drop_underscore_header(name)
            return
        name = name.lower()
        if name == b"content-length":
            self._length = int(value)  # llhttp has validated it (digits only, no duplicates)
        elif name == b"transfer-encoding":
            self._chunked = True  # llhttp refuses anything but a final "chunked" in a request
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Build the exchange: proxied here, or the app's own path through ASGI."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_head = False
        parser = self.parser
        url = self._url
        if url[:1] == b"/":
            target = url
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = parse_url(url)  # absolute-form, e.g. "http://host/path?q"
            raw_path, query = parsed.path or b"/", parsed.query or b""
            target = raw_path + (b"?" + query if query else b"")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        head = RequestHead(  # positional: this runs once per request
            method,
            target,
            path,
            query,
            self._headers,
            parser.get_http_version(),
            parser.should_keep_alive(),
            parser.should_upgrade(),
            self._length,
            self._chunked,
            self._expect,
            self.secure,
        )
        self.server_state.total_requests += 1
        front = self.front
        exchange: Exchange
        if (plane := front.data_plane) is not None:
            plane.stats.http1_requests += 1
        if self._redirect and front.https_port is not None and path not in NOT_REDIRECTED:
            host = self.sockname[0] if self.sockname else "localhost"
            exchange = RedirectExchange(self, head, front.https_port, host)
        elif method == b"CONNECT" or front.is_reserved(path):
            if front.owner is None:
                exchange = AsgiExchange(self, head, self.limits.max_control_body_bytes)
            else:
                exchange = ProxyExchange(front.owner, self, head)
        elif plane is not None:
            exchange = ProxyExchange(plane, self, head)
        else:  # before the lifespan set the data plane (uvicorn listens only after it): the app says so
            exchange = AsgiExchange(self, head, self.limits.max_control_body_bytes)
        if self.access_log is not None:
            exchange.began = perf_counter()
        self._current = exchange
        if head.upgrade:
            self._upgrading = exchange
        if self._active is None:
            self._active = exchange
            exchange.start()
        else:
            self._queue.append(exchange)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        """A piece of the current request's body."""
        if self._current is not None:
            self._current.on_request_body(body)

    def on_message_complete(self) -> None:
        """The current request's body is complete."""
        current, self._current = self._current, None
        if current is not None:
            current.on_request_end()

    # -- used by exchanges -----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes to the client."""
        if not self._lost:
            self.transport.write(data)

    def error_bytes(self, status: int, body: bytes) -> bytes:
        """An error response, saying `close` when the connection will close after it."""
        active = self._active
        close = not self.keep_alive or (active is not None and not active.head.keep_alive)
        response = error_response(status, body, close=close)
        if active is not None and active.head.method == b"HEAD":
            return response[: len(response) - len(body)]  # the same head, no body
        return response

    def finish(self, exchange: Exchange) -> None:
        """`exchange` wrote its whole response: start the next pipelined request, or wait for one."""
        if exchange is not self._active:
            return
        if self.access_log is not None:
            self._log_access(exchange)
        self._active = None
        if not (self.keep_alive and exchange.head.keep_alive):
            self.keep_alive = False
            if self._pending_error:
                self.write(self._pending_error)
            self.close()
            return
        if self._queue:
            following = self._queue.popleft()
            if not self._queue:
                self.resume_reading("pipeline")
            self._active = following
            following.start()
            return
        if self.paused:
            self.resume_reading("pipeline")
        if not self._in_head and not self._lost:
            self._idle_since = now = self.loop.time()
            if self._idle_timer is None:
                deadline = now + self.limits.keep_alive_timeout
                self._idle_timer = self.loop.call_at(deadline, self._on_idle_timeout)

    def start_tunnel(self, exchange: Tunnel) -> None:
        """After a 101: client bytes go to the replica as they come, no more HTTP parsing."""
        self._tunnel = exchange  # its access-log line is written when it ends
        self._cancel_timers()
        if exchange.leftover:
            exchange.on_client_data(exchange.leftover)
            exchange.leftover = b""
        self.resume_reading("upgrade")

    def pause_reading(self, reason: str) -> None:
        """Stop reading the client for `reason` (several reasons may hold at once)."""
        if not self.paused and not self._lost:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        """Lift `reason`; read again once no reason is left."""
        paused = self.paused
        if reason in paused:
            paused.discard(reason)
            if not paused and not self._lost:
                self.transport.resume_reading()
                if self._body_timer is not None:
                    self._body_seen = self.loop.time()  # the pause was ours: the body clock restarts

    async def drain(self) -> None:
        """Wait until the client takes bytes again (ASGI sends)."""
        if self.writing_paused and not self._lost:
            self._drain = self.loop.create_future()
            await self._drain

    def close(self) -> None:
        """Close after the buffered bytes are sent; linger while the client may still be sending a body.

        Closing a socket with unread bytes in it sends a reset, which can destroy our answer (e.g. a 413)
        before the client reads it; so, like nginx's lingering close, half-close and drain a little first.
        """
        if self._lost or self._lingering:
            return
        if not (self._current is not None or self._in_head) or not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self._cancel_timers()
        self.transport.write_eof()
        self.paused.clear()
        self.transport.resume_reading()
        self._idle_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def abort(self) -> None:
        """Break the connection now: the client must see a truncated response, not a complete one."""
        if not self._lost:
            if self.access_log is not None and self._active is not None:
                self._log_access(self._active, "broken")
            self.transport.abort()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the current response."""
        if self._active is None:
            self.close()
        else:
            self.keep_alive = False

    # -- internals -------------------------------------------------------------------------------

    def _drop_underscore_header(self, name: bytes) -> None:
        """Not forwarded, as nginx's default (underscores_in_headers off): frameworks that read `_` as `-`
        would take `Transfer_Encoding` for `Transfer-Encoding` and frame the body differently from us."""
        if not self._said_underscore:
            self._said_underscore = True
            logger.info(
                "dropped request header %r from %s: header names with an underscore are not forwarded",
                name.decode("latin-1"),
                f"{self.peer[0]}:{self.peer[1]}" if self.peer else "a client",
            )

    def _head_too_large_error(self) -> None:
        self._head_too_large = True
        raise ValueError("request header too large")  # stops the parser: HttpParserCallbackError

    def _log_access(self, exchange: Exchange, outcome: str | None = None) -> None:
        """The exchange's one access-log line (LB_ACCESS_LOG), unless it has one already."""
        if self.access_log is not None and not exchange.logged:
            exchange.logged = True
            self.access_log.log(self.peer, exchange, outcome)

    def _reject(self, response: bytes) -> None:
        """A request we refuse to parse further: answer once the earlier ones are answered, then close."""
        self.pause_reading("rejected")
        self.keep_alive = False
        active = self._active
        if active is not None and active is self._current:
            # Its own body is malformed (or stopped coming): it can never complete.
            if active.started:
                self.abort()  # logs it as broken
            elif self.access_log is not None:
                active.status = int(response[9:12])  # "HTTP/1.1 NNN ..."
                self._log_access(active)
            self._active = None
            active.on_client_lost()
            if active.started:
                return
        if self._active is None:
            self.write(response)
            self.close()
        else:
            self._pending_error = response
            self._queue.clear()

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._active is None:
            self.write(self.front.header_timeout)
            self.close()
        else:
            self.keep_alive = False  # a pipelined request's head stalls: close after the current one

    def _on_body_timeout(self) -> None:
        """No body bytes for LB_BODY_TIMEOUT while we were reading: 408 (or a cut-off response), close."""
        self._body_timer = None
        if self._current is None or self._lost or self._lingering:
            return  # the body completed meanwhile
        now = self.loop.time()
        if self.paused:
            self._body_seen = now  # we are not reading (backpressure, pipelining): not the client's fault
        deadline = self._body_seen + self.limits.body_timeout
        if now < deadline:
            self._body_timer = self.loop.call_at(deadline, self._on_body_timeout)
            return
        logger.info("client %s sent no body bytes for %s s; closing", self.peer, self.limits.body_timeout)
        self._reject(self.front.body_timeout)

    def _on_send_timeout(self) -> None:
        """The client took nothing of what we sent for LB_SEND_TIMEOUT: drop it (nginx's send_timeout)."""
        self._send_timer = None
        if not self.writing_paused or self._lost:
            return
        backlog = self._untaken_bytes()
        if backlog < self._send_backlog:  # it read something: slow, but reading
            self._send_backlog = backlog
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._on_send_timeout)
            return
        logger.info("client %s read nothing for %s s; closing", self.peer, self.limits.send_timeout)
        self.abort()

    def _untaken_bytes(self) -> int:
        """Bytes sent to the client and not yet taken: our buffer plus the kernel's send queue.

        The kernel queue counts: it holds megabytes, and it shrinks as the client reads long before our
        own buffer does (the socket reports writable only once a third of it is free).
        """
        size = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
                size += int.from_bytes(queued, sys.byteorder, signed=True)
        return size

    def _on_idle_timeout(self) -> None:
        self._idle_timer = None
        if self._active is not None or self._in_head or self._lingering or self._tunnel is not None:
            return  # busy: finish() re-arms
        deadline = self._idle_since + self.limits.keep_alive_timeout
        if self.loop.time() < deadline:
            self._idle_timer = self.loop.call_at(deadline, self._on_idle_timeout)
        else:
            self.close()

    def _cancel_timers(self) -> None:
        """Stop the request timers (the send timer runs on: a tunnel or a lingering close still sends)."""
        for timer in (self._header_timer, self._idle_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_timer = self._body_timer = None


def make_config(
    app: Any,
    front: Front,
    *,
    lifespan: Literal["on", "off"],
    access_log: bool,
    loop: Literal["none", "uvloop"] = "none",
) -> uvicorn.Config:
    """The uvicorn config every LB process uses: this module's protocol, no per-request extras.

    uvicorn only accepts connections and runs the lifespan here: every request is parsed by
    ClientConnection, proxied ones never become ASGI.
    """

    def protocol(**kwargs: Any) -> ClientConnection:
        return ClientConnection(front=front, **kwargs)

    return uvicorn.Config(
        app,
        loop=loop,  # "none": the caller runs uvloop itself
        http=protocol,  # type: ignore[arg-type]  # uvicorn types it as one of its own protocol classes
        lifespan=lifespan,
        log_config=None,
        access_log=access_log,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
    )
