"""HTTP/2 to clients (ALPN chose h2 on a TLS connection): one H2Connection, one H2Stream per request.

Each stream is the `ClientSide` of the same exchanges HTTP/1.1 uses: a ProxyExchange (routing by key,
retries, limits, streaming) or, for the LB's own paths, an AsgiExchange into FastAPI. An exchange writes a
response as HTTP/1.1 bytes: one head, then the body unframed (the request head says version "2", so
nothing is chunked); the stream turns the head into HEADERS and the rest into DATA.

Flow control both ways follows the replica's connection. Request DATA is acknowledged (WINDOW_UPDATE)
only while the exchange reads the client, so a replica that takes nothing stops the client at its window.
Response DATA is sent while the client's windows (stream and connection) and the socket take it; beyond
HIGH_WATER bytes queued on a stream, the exchange pauses the replica's connection until the client reads.

The protocol itself (frames, stream states, flow-control windows, malformed requests, HPACK) is
h2codec.py's, compiled with this module. Defences: at most LB_H2_MAX_STREAMS open streams
(SETTINGS_MAX_CONCURRENT_STREAMS; one beyond it is refused with RST_STREAM), a header list of at most
LB_MAX_HEADER_BYTES (HPACK-decoded size; larger is a 431) and a header block of at most twice that
(CONTINUATION flood, CVE-2024-27316: GOAWAY ENHANCE_YOUR_CALM and close); rapid reset (CVE-2023-44487):
more than LB_H2_MAX_STREAMS streams reset within one second (by the client, or by us for its errors) is
GOAWAY ENHANCE_YOUR_CALM and close; a stream opened and cancelled in the same read never reaches a
replica; PING and SETTINGS floods: more than FLOOD_LIMIT of either within one second, the same; frames
that ask nothing (empty DATA, PRIORITY, unknown types): more than IDLE_FRAME_LIMIT a second, the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from app.dataplane.asgi_bridge import AsgiExchange
from app.dataplane.exchange import ProxyExchange
from app.dataplane.front import Front
from app.dataplane.h2codec import (
    BODY,
    ENDED,
    ENHANCE_YOUR_CALM,
    GONE,
    IDLE_FRAME,
    INTERNAL_ERROR,
    NO_ERROR,
    PINGED,
    REFUSED,
    REQUEST,
    RESET,
    SETTINGS_CHANGED,
    WINDOW,
    H2Event,
    H2ProtocolError,
    ServerCodec,
)
from app.dataplane.http1 import RequestHead, error_response
from app.dataplane.replies import failure_body
from app.dataplane.seams import AsgiClientSide, Exchange, Tunnel

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

logger = logging.getLogger(__name__)

HIGH_WATER = 64 * 1024  # response bytes queued on a stream before its replica is paused
LOW_WATER = 16 * 1024  # ... and resumed
FLOOD_LIMIT = 100  # PINGs, or SETTINGS frames, per FLOOD_PERIOD
FLOOD_PERIOD = 1.0
IDLE_FRAME_LIMIT = 1000  # frames that ask nothing (empty DATA, PRIORITY, unknown types) per FLOOD_PERIOD
STREAM_WINDOW = 65535  # the client's initial send window per stream (the protocol's default)
# Connection-level receive window: every stream can fill its own window at once, so one stream the
# replica does not read cannot stall the others.
CONNECTION_HEADERS = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)


class Budget:
    """At most `limit` events per `period` seconds (fixed windows): a flood spends it."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.left = limit
        self.until = 0.0

    def spend(self, now: float) -> bool:
        """One event; False when the window's budget is gone."""
        if now >= self.until:
            self.until = now + self.period
            self.left = self.limit
        self.left -= 1
        return self.left >= 0


class H2Stream(AsgiClientSide):
    """One request on an HTTP/2 connection: the ClientSide (an AsgiClientSide) its exchange answers through.

    Its only base is its seam (a mypyc trait): compiled with the hot path, a native class.
    """

    def __init__(self, conn: H2Connection, stream_id: int, head: RequestHead) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.head = head
        self.config = conn.config
        self.server_state = conn.server_state
        self.app_state = conn.app_state
        self.loop = conn.loop
        self.sockname = conn.sockname
        self.peer = conn.peer
        self.ip = conn.ip
        self.keep_alive = True
        self.writing_paused = False
        self.paused: set[str] = set()
        self.exchange: Exchange | None = None
        self.headers_out: list[tuple[bytes, bytes]] | None = None
        self.head_written = False
        self.pending: deque[bytes] = deque()
        self.pending_size = 0
        self.ended = False  # the exchange wrote its whole response
        self.end_sent = False
        self.request_done = False  # the client's END_STREAM arrived
        self.closed = False  # nothing more goes out (reset, or the response is complete)
        self.unacked = 0  # flow-controlled bytes received while paused
        self._drain: asyncio.Future[None] | None = None

    # -- ClientSide -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """HTTP/1.1 response bytes from the exchange: the head once, then body bytes."""
        if self.closed:
            return
        if not self.head_written:
            self.head_written = True
            end = data.find(b"\r\n\r\n")
            lines = data[:end].split(b"\r\n")
            headers = [(b":status", lines[0][9:12])]
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name not in CONNECTION_HEADERS:
                    headers.append((name, value.strip()))
            self.headers_out = headers
            data = data[end + 4 :]
        if data:
            self.pending.append(data)
            self.pending_size += len(data)
        self.conn.mark(self)

    def error_bytes(self, status: int, body: bytes) -> bytes:
        """An error response (no body to a HEAD)."""
        response = error_response(status, body, close=False)
        return response[: len(response) - len(body)] if self.head.method == b"HEAD" else response

    def finish(self, exchange: Exchange) -> None:
        """The whole response is written: END_STREAM goes with its last bytes."""
        if self.closed:
            return
        self.ended = True
        self.conn.log_access(self, None)
        self.conn.mark(self)

    def start_tunnel(self, exchange: Tunnel) -> None:
        """No Upgrade on HTTP/2 (the head never asks for one): refuse."""
        self.abort()

    def pause_reading(self, reason: str) -> None:
        """Hold the client's window: its DATA is acknowledged once reading resumes."""
        self.paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        """Acknowledge what was held, once no reason is left."""
        self.paused.discard(reason)
        if not self.paused and self.unacked:
            unacked, self.unacked = self.unacked, 0
            self.conn.acknowledge(self, unacked)

    def abort(self) -> None:
        """Cut the response off: RST_STREAM, so the client sees a truncated response."""
        if not self.closed:
            self.conn.log_access(self, "broken")
            self.conn.reset(self, INTERNAL_ERROR)

    def close(self) -> None:
        """Close after the response; before it is complete, a reset."""
        if not self.ended:
            self.abort()

    async def drain(self) -> None:
        """Wait until the client takes bytes again (ASGI sends)."""
        while self.writing_paused and not self.closed:
            self._drain = self.loop.create_future()
            await self._drain

    # -- driven by the connection -----------------------------------------------------------------

    def set_writable(self, writable: bool) -> None:
        """Tell the exchange the stream's queue crossed a watermark."""
        self.writing_paused = not writable
        if self.exchange is not None:
            self.exchange.on_client_writable(writable)
        if writable:
            self.wake()

    def wake(self) -> None:
        """Release a waiting drain()."""
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)


class H2Connection:
    """One HTTP/2 client connection: frames in, exchanges per stream, frames out in one write per turn.

    An asyncio protocol by its methods, not by inheritance, so that it compiles to a native class.
    """

    transport: asyncio.Transport

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        *,
        front: Front,
        max_streams: int,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = asyncio.get_event_loop()
        self.front = front
        self.limits = front.limits
        self.max_streams = max_streams
        self.peer: tuple[str, int] | None = None
        self.sockname: tuple[str, int] | None = None
        self.ip = b""
        self.streams: dict[int, H2Stream] = {}
        self._codec = ServerCodec(
            max_streams=max_streams,
            max_header_list=self.limits.max_header_bytes,
            connection_window=(max_streams + 1) * STREAM_WINDOW,
        )
        self._dirty: list[H2Stream] = []
        self._blocked: set[H2Stream] = set()
        self._starting: list[H2Stream] = []
        self._flush_soon = False
        self._write_paused = self._lost = self._refused = self._closing = False
        self._closing_when_idle = False  # GOAWAY sent: close once the open streams are answered
        self._resets = Budget(max_streams, 1.0)
        self._pings = Budget(FLOOD_LIMIT, FLOOD_PERIOD)
        self._settings = Budget(FLOOD_LIMIT, FLOOD_PERIOD)
        self._idle_frames = Budget(IDLE_FRAME_LIMIT, FLOOD_PERIOD)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send our SETTINGS (stream cap, header list size) and a roomy connection window."""
        self.transport = cast(asyncio.Transport, transport)
        connections = self.server_state.connections
        if len(connections) >= self.limits.max_connections:
            self._refused = True
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
        self._codec.initiate_connection()
        self._send()
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        """Every open stream's exchange learns the client is gone."""
        self._lost = True
        if self._refused:
            return
        self.server_state.connections.discard(self)
        for timer in (self._idle_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            self._lose(stream, "client_closed")

    def data_received(self, data: bytes) -> None:
        """Frames in: events to streams; then what they wrote goes out in one piece."""
        if self._closing:
            return
        try:
            events = self._codec.receive_data(data)
        except H2ProtocolError as exc:
            if exc.code == ENHANCE_YOUR_CALM:
                logger.warning("client %s floods: %s; closing", self.peer, exc)
            else:
                logger.info("HTTP/2 protocol error from %s: %s; closing", self.peer, exc)
            self._send()
            self._close_now(drop=True)
            return
        for event in events:
            kind = event.kind
            if kind == BODY:
                self._on_data(event)
            elif kind == REQUEST:
                self._on_request(event)
            elif kind == ENDED:
                self._on_request_end(event.stream_id)
            elif kind == WINDOW:
                self._on_window(event.stream_id)
            elif kind == RESET or kind == REFUSED:
                self._on_reset(event.stream_id)
            elif kind == PINGED:
                self._count(self._pings, "PING")
            elif kind == SETTINGS_CHANGED:
                self._count(self._settings, "SETTINGS")
            elif kind == IDLE_FRAME:
                self._count(self._idle_frames, "empty or PRIORITY")
            elif kind == GONE:
                self.shutdown()
            if self._closing:
                return
        starting, self._starting = self._starting, []
        for stream in starting:  # opened and reset in the same read: it never reaches a replica
            if not stream.closed and stream.exchange is not None:
                stream.exchange.start()
        self._flush()

    def eof_received(self) -> bool | None:
        """The client is done: close."""
        return None

    def pause_writing(self) -> None:
        """The socket takes no more for now: stop sending DATA; the client must read within send_timeout."""
        self._write_paused = True
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._on_send_timeout)

    def resume_writing(self) -> None:
        """The socket drained: send the queued DATA."""
        self._write_paused = False
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        blocked = list(self._blocked)
        self._blocked.clear()
        for stream in blocked:
            self._pump(stream)
        self._send()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown (or the client's GOAWAY): no new streams; close once idle."""
        if self._closing or self._lost:
            return
        if not self._codec.closed:
            self._codec.close_connection(NO_ERROR)
            self._send()
        if not self.streams:
            self._close_now()
        else:
            self._closing_when_idle = True

    # -- used by streams ---------------------------------------------------------------------------

    def mark(self, stream: H2Stream) -> None:
        """`stream` has something to send: send it at the end of this turn of the loop."""
        self._dirty.append(stream)
        if not self._flush_soon:
            self._flush_soon = True
            self.loop.call_soon(self._flush)

    def acknowledge(self, stream: H2Stream, size: int) -> None:
        """The exchange took `size` more bytes of the request body: open the client's window."""
        if not stream.closed and not self._lost:
            self._codec.acknowledge_received_data(size, stream.stream_id)
            self._send()

    def reset(self, stream: H2Stream, code: int) -> None:
        """Reset one stream (the others go on)."""
        if stream.closed:
            return
        stream.closed = True
        self._forget(stream)
        self._codec.reset_stream(stream.stream_id, code)
        self._send()

    def log_access(self, stream: H2Stream, outcome: str | None) -> None:
        """The stream's access-log line, once (LB_ACCESS_LOG)."""
        access_log, exchange = self.front.access_log, stream.exchange
        if access_log is not None and exchange is not None and not exchange.logged:
            exchange.logged = True
            access_log.log(self.peer, exchange, outcome)

    # -- events ------------------------------------------------------------------------------------

    def _on_request(self, event: H2Event) -> None:
        stream_id = event.stream_id
        fields = event.headers
        head = self._head(fields or [], not event.end)
        stream = H2Stream(self, stream_id, head)
        self.streams[stream_id] = stream
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        front = self.front
        self.limits = front.limits  # a reload swaps them: each new stream reads them anew
        plane = front.data_plane
        exchange: Exchange
        if fields is None:
            self._refuse(stream, 431, "Request header fields too large")
            return
        if head.method == b"CONNECT":
            self._refuse(stream, 405, "CONNECT is not served")
            return
        if front.is_reserved(head.path):
            if front.owner is None:
                exchange = AsgiExchange(stream, head, self.limits.max_control_body_bytes)
            else:
                exchange = ProxyExchange(front.owner, stream, head)
        elif plane is not None:
            exchange = ProxyExchange(plane, stream, head)
        else:
            exchange = AsgiExchange(stream, head, self.limits.max_control_body_bytes)
        if plane is not None:
            plane.stats.h2_requests += 1
        self.server_state.total_requests += 1
        if front.access_log is not None:
            exchange.began = perf_counter()
        stream.exchange = exchange
        self._starting.append(stream)

    def _refuse(self, stream: H2Stream, status: int, message: str) -> None:
        """Answer the stream with an error of our own, with no exchange."""
        stream.exchange = None
        stream.write(error_response(status, failure_body(message), close=False))
        stream.ended = True  # as finish() does, with no exchange to log
        self.mark(stream)

    def _head(self, headers: list[tuple[bytes, bytes]], has_body: bool) -> RequestHead:
        method = target = b""
        authority: bytes | None = None
        fields: list[tuple[bytes, bytes]] = []
        length: int | None = None
        host = False
        cookies: list[bytes] = []
        for name, value in headers:
            if name[0] == 58:  # ":" (names are never empty: the codec checked them)
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            if b"_" in name or name in (b"te", b"expect"):
                continue  # as on HTTP/1.1 (underscores); te and expect are this hop's business
            if name == b"content-length":
                length = int(value)  # the codec holds the DATA it receives to it
            elif name == b"host":
                host = True
            elif name == b"cookie":
                cookies.append(value)  # HTTP/2 may split them; HTTP/1.1 takes one field (RFC 9113 8.2.3)
                continue
            fields.append((name, value))
        if cookies:
            fields.append((b"cookie", b"; ".join(cookies)))
        if authority is not None and not host:
            fields.insert(0, (b"host", authority))
        raw_path, _, query = (target or b"/").partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        # A body of no announced length goes to the replica chunked.
        chunked = has_body and length is None
        return RequestHead(
            method, target or b"/", path, query, fields, "2", True, False, length, chunked, False, True
        )

    def _on_data(self, event: H2Event) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow
        if stream is not None and stream.exchange is not None and not stream.closed:
            if event.data:
                stream.exchange.on_request_body(event.data)
            if stream.paused and not stream.closed:
                stream.unacked += size  # acknowledged when the exchange reads again
                return
        if size:  # read, or not wanted (answered already): the client's window opens again
            self._codec.acknowledge_received_data(size, event.stream_id)

    def _on_request_end(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.request_done = True
            if stream.exchange is not None and not stream.closed:
                stream.exchange.on_request_end()

    def _on_window(self, stream_id: int) -> None:
        if stream_id == 0:
            blocked = list(self._blocked)
            self._blocked.clear()
            for stream in blocked:
                self._pump(stream)
        elif (one := self.streams.get(stream_id)) is not None:
            self._blocked.discard(one)
            self._pump(one)

    def _on_reset(self, stream_id: int) -> None:
        """A stream reset by the client, or by the codec for a stream error: both count against floods."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.closed = True
            self._forget(stream)
            self._lose(stream, "client_closed")
        if not self._resets.spend(self.loop.time()):
            logger.warning(
                "client %s has streams reset too fast (more than %d a second): closing (rapid reset)",
                self.peer,
                self.max_streams,
            )
            self._calm_down()

    def _count(self, budget: Budget, what: str) -> None:
        if not budget.spend(self.loop.time()):
            logger.warning("client %s sends %s frames too fast: closing", self.peer, what)
            self._calm_down()

    # -- sending -----------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the streams wrote since the last turn: HEADERS, DATA within the windows, END_STREAM."""
        self._flush_soon = False
        dirty, self._dirty = self._dirty, []
        codec = self._codec
        for stream in dirty:
            if stream.closed:
                continue
            headers = stream.headers_out
            if headers is not None:
                stream.headers_out = None
                if stream.ended and not stream.pending:
                    codec.send_headers(stream.stream_id, headers, True)
                    self._done(stream)
                    continue
                codec.send_headers(stream.stream_id, headers, False)
            self._pump(stream)
        self._send()

    def _pump(self, stream: H2Stream) -> None:
        """Send the stream's queued DATA as far as the windows and the socket allow."""
        if stream.closed or stream.headers_out is not None:
            return
        codec, pending, sid = self._codec, stream.pending, stream.stream_id
        if pending and not self._write_paused:
            frame = codec.max_outbound_frame_size
            window = codec.local_flow_control_window(sid)
            while pending and window > 0:
                chunk = pending[0]
                size = min(window, frame)
                if len(chunk) > size:
                    pending[0] = chunk[size:]
                    chunk = chunk[:size]
                else:
                    pending.popleft()
                stream.pending_size -= len(chunk)
                window -= len(chunk)
                codec.send_data(sid, chunk, stream.ended and not pending)
            if not pending and stream.ended:
                self._done(stream)
                return
        if pending:
            self._blocked.add(stream)
            if stream.pending_size > HIGH_WATER and not stream.writing_paused:
                stream.set_writable(False)
        else:
            if stream.writing_paused and stream.pending_size <= LOW_WATER:
                stream.set_writable(True)
            if stream.ended and not stream.end_sent:
                codec.end_stream(sid)
                self._done(stream)

    def _done(self, stream: H2Stream) -> None:
        """The response is complete; a request body still coming is not wanted (RST_STREAM NO_ERROR)."""
        stream.end_sent = stream.closed = True
        self._forget(stream)
        if not stream.request_done:
            self._codec.reset_stream(stream.stream_id, NO_ERROR)

    def _forget(self, stream: H2Stream) -> None:
        self.streams.pop(stream.stream_id, None)
        if stream.unacked and not self._lost:  # held for a paused exchange: the connection window returns
            unacked, stream.unacked = stream.unacked, 0
            self._codec.acknowledge_received_data(unacked, stream.stream_id)
        self._blocked.discard(stream)
        stream.wake()
        if not self.streams:
            if self._closing_when_idle:
                self._send()
                self._close_now()
            else:
                self._arm_idle()

    def _lose(self, stream: H2Stream, outcome: str) -> None:
        """The client will not read this stream's response: its exchange lets go of the replica."""
        stream.closed = True
        if stream.exchange is not None and not stream.ended:
            self.log_access(stream, outcome)
            stream.exchange.on_client_lost()
        stream.wake()

    def _send(self) -> None:
        data = self._codec.data_to_send()
        if data and not self._lost:
            self.transport.write(data)

    def _calm_down(self) -> None:
        """A flood: GOAWAY ENHANCE_YOUR_CALM, then the connection ends (its streams with it)."""
        self._codec.close_connection(ENHANCE_YOUR_CALM)
        self._send()
        self._close_now(drop=True)

    def _close_now(self, *, drop: bool = False) -> None:
        """Close; `drop`: for a client that breaks the protocol or floods, reading nothing more from it.

        A TLS close waits for the client's close_notify and reads (and discards) what it sends meanwhile:
        a flood must not go on being read. The abort waits one turn of the loop, so that the GOAWAY just
        written leaves first (the event loop sends queued writes at the end of its turn; an abort now
        would drop it).
        """
        self._closing = True
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            self._lose(stream, "client_closed")
        if not self._lost:
            if drop:
                self.transport.pause_reading()
                self.loop.call_soon(self._abort)
            else:
                self.transport.close()

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def _arm_idle(self) -> None:
        if self._idle_timer is None and not self._lost and not self._closing:
            self._idle_timer = self.loop.call_later(self.limits.keep_alive_timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if not self.streams and not self._lost:
            self.shutdown()

    def _on_send_timeout(self) -> None:
        self._send_timer = None
        if self._write_paused and not self._lost:
            logger.info("client %s read nothing for %s s; closing", self.peer, self.limits.send_timeout)
            self.transport.abort()
