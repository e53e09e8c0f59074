"""One proxied request, driven by callbacks only: key -> ring -> streaming upstream connection -> client.

The request body streams to the replica as it arrives and the response streams back as it arrives; each
side pauses the other when its send buffer is full. Until the first response byte goes to the client, a
failure is retried on the ring's successors (with the body replayed while it is small enough to keep);
after that, a failure breaks the client's connection: a truncated response is never mistaken for a whole one.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Protocol

from app.control.routing import RoutingTable
from app.dataplane import retry
from app.dataplane.balance import pick_bounded
from app.dataplane.http1 import (
    CONTINUE,
    NO_BODY_STATUSES,
    RequestHead,
    encode_chunk,
    encode_upstream_head,
    status_line,
)
from app.dataplane.keys import KeyExtractor, random_key
from app.dataplane.replies import failure_body, too_large
from app.dataplane.seams import ClientSide, ResponseSink, Tunnel, UpstreamSide
from app.errors import NoReplicasError, quote
from app.metrics import Stats
from app.upstream.errors import UpstreamConnectError, UpstreamError, UpstreamResetError
from app.upstream.pool import UpstreamPool

logger = logging.getLogger(__name__)

# Request body bytes kept for a replay on another replica; a larger body is not retried once sent.
REPLAY_LIMIT = 64 * 1024
# Body bytes held while no upstream connection takes them, before the client is paused.
UNSENT_LIMIT = 64 * 1024
# A request body up to this size is read whole before the request goes to a replica.
BUFFER_LIMIT = 64 * 1024


class RoutingSource(Protocol):
    """Where routing comes from: the membership itself, or a worker's copy of its table."""

    @property
    def table(self) -> RoutingTable: ...
    def report_failure(self, name: str, reason: str) -> None: ...


class DataPlane:
    """What every proxied exchange shares: routing, key extraction, retry limit, body limit, counters."""

    def __init__(
        self,
        routing: RoutingSource,
        extract_key: KeyExtractor,
        *,
        max_tries: int = 3,
        max_body_bytes: int = 10 * 1024 * 1024,
        translate_404: bool = True,
        names_replicas: bool = True,
        stats: Stats | None = None,
        balance_factor: float | None = None,
    ) -> None:
        self.routing = routing
        self.stats = stats or Stats()  # per-replica counters (this process's; /metrics reads the owner's)
        self.balance_factor = balance_factor  # None: plain consistent hashing
        self.translate_404 = translate_404  # a replica's 404 becomes the contract's 400 (not the LB's own)
        self.names_replicas = names_replicas  # False: the upstream is the LB's owner process, not a replica
        self.extract_key = extract_key
        self.max_tries = max_tries
        self.no_replicas = failure_body("No replicas available to serve the request")
        self.none_answered = failure_body("No replica could answer the request")
        self.limit_bodies(max_body_bytes)
        self.tasks: set[asyncio.Task[None]] = set()  # connects in progress (strong references)

    def limit_bodies(self, max_body_bytes: int) -> None:
        """The request body limit, and what follows from it (at start, and on a reload)."""
        self.max_body_bytes = max_body_bytes
        self.too_large = too_large(max_body_bytes)
        self.buffer_bytes = min(max_body_bytes + 1, BUFFER_LIMIT)  # body read before a replica is picked

    def spawn(self, coro: Any) -> None:
        """Run a rare slow step (a new upstream connection) without losing the Task."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class ProxyExchange(Tunnel, ResponseSink):
    """A proxied request from its head to the end of its response (or of its tunnel)."""

    __slots__ = (
        "_chunk_out",
        "_client",
        "_conn",
        "_done",
        "_key",
        "_name",
        "_out",
        "_plane",
        "_received",
        "_replay",
        "_replay_size",
        "_request_head",
        "_sent_at",
        "_sent_any",
        "_started",
        "_swallow",
        "_tried",
        "_unsent",
        "_unsent_size",
        "_begun",
        "_upstream",
        "_waiting_body",
        "began",
        "body_done",
        "head",
        "leftover",
        "logged",
        "status",
    )

    def __init__(self, plane: DataPlane, client: ClientSide, head: RequestHead) -> None:
        self._plane = plane
        self._client = client
        self.head = head
        self.body_done = not head.has_body
        self.leftover = b""  # bytes the client sent after an Upgrade request, for the tunnel
        self.status = 0  # the status the client gets (for the access log)
        self.began = 0.0  # perf_counter() at the head, set only when the access log is on
        self.logged = False
        scope: dict[str, Any] = {"query_string": head.query, "headers": head.headers, "path": head.path}
        scope["client"] = client.peer
        self._key = plane.extract_key(scope) or random_key()
        self._request_head = b""
        self._replay: list[bytes] | None = []  # the body as sent, for another try (None: too large to keep)
        self._replay_size = 0
        self._unsent: list[bytes] = []
        self._unsent_size = 0
        self._received = 0
        self._conn: UpstreamSide | None = None
        self._upstream: UpstreamPool | None = None
        self._name = ""
        self._tried: tuple[str, ...] = ()  # replicas tried, in order (a tuple: cheaper than a set for 1-3)
        self._sent_any = self._started = self._chunk_out = self._swallow = self._done = False
        self._waiting_body = self._begun = False
        self._sent_at = 0.0
        self._out: list[bytes] = []

    # -- driven by the client connection ---------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether response bytes went (or are going) to the client."""
        return self._started

    @property
    def upstream(self) -> str:
        """The replica that answered, or was tried last ("" before any, or for the LB's own paths)."""
        return self._name if self._plane.names_replicas else ""

    def start(self) -> None:
        """Pick the replica and send the head (on an idle connection: no Task, no await)."""
        head, plane = self.head, self._plane
        self._begun = True
        if self._received > plane.max_body_bytes or (head.length or 0) > plane.max_body_bytes:
            self._reply(413, plane.too_large, close=True)
            return
        if head.expect_continue and head.has_body:
            self._client.write(CONTINUE)  # we take the body ourselves; the replica never sees Expect
        if self.body_done or self._received >= plane.buffer_bytes:
            self._route()
        else:
            # Like nginx's client_body_buffer_size: a small body is read whole first, so the 413 holds
            # before a replica answers, a failed try can be replayed, and the request leaves in one write.
            self._waiting_body = True

    def _route(self) -> None:
        self._waiting_body = False
        plane = self._plane
        table = plane.routing.table
        try:
            name = table.ring.lookup(self._key)
        except NoReplicasError:  # nothing is UP right now
            self._reply(503, plane.no_replicas)
            return
        if plane.balance_factor is not None:
            chosen = pick_bounded(table.ring, self._key, name, table.upstreams, plane.balance_factor)
            if chosen != name:
                plane.stats.replica(name).diverted += 1
                name = chosen
        self._try(table.upstreams[name], name)

    def on_request_body(self, data: bytes) -> None:
        """A piece of the client's body: to the replica now, or held until a connection takes it."""
        if self._done:
            return
        self._received += len(data)
        if self._received > self._plane.max_body_bytes:
            if not self._begun:
                return  # queued behind an earlier request: start() answers 413 in its turn
            if self._started:
                self._finish_broken()
            else:
                self._reply(413, self._plane.too_large, close=True)
            return
        self._forward_body(encode_chunk(data) if self.head.chunked else data)
        if self._waiting_body and (
            self._received >= self._plane.buffer_bytes or self._unsent_size > UNSENT_LIMIT
        ):
            # A large body: stream the rest. (The framed size counts too: chunk headers make it larger,
            # and _forward_body pauses the client beyond UNSENT_LIMIT; waiting on would wait forever.)
            self._route()

    def on_request_end(self) -> None:
        """The client's body is complete."""
        self.body_done = True
        if self._done:
            return
        if self.head.chunked:
            self._forward_body(b"0\r\n\r\n")
        if self._conn is not None:
            self._conn.request_done = True
        elif self._waiting_body:
            self._route()

    def on_client_writable(self, writable: bool) -> None:
        """The client's send buffer crossed a watermark: pause or resume the replica."""
        conn = self._conn
        if conn is not None:
            if writable:
                conn.resume_reading()
            else:
                conn.pause_reading()

    def on_client_data(self, data: bytes) -> None:
        """Tunnel bytes from the client (after a 101)."""
        if self._conn is not None:
            self._conn.write(data)

    def on_client_eof(self) -> None:
        """The client half-closed its side of a tunnel."""
        if self._conn is not None:
            self._conn.write_eof()

    def on_client_lost(self) -> None:
        """The client went away: drop the upstream connection (its state is unknown)."""
        self._abandon_upstream()

    def _abandon_upstream(self) -> None:
        """End the exchange and let go of its upstream connection without reusing it."""
        self._done = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.unbind()
        self._leave()

    # -- ResponseSink: driven by the upstream connection -----------------------------------------

    def on_response_head(
        self, status: int, header_lines: list[bytes], length: int | None, chunked: bool
    ) -> None:
        """Start the client's response: same status and headers, framing for this hop."""
        self._started = True
        head, client, stats = self.head, self._client, self._plane.stats
        stats.replica(self._name).observe(status, perf_counter() - self._sent_at)
        if head.upgrade:
            client.keep_alive = False  # the parser stopped at the Upgrade request: nothing follows
        if status == 404 and self._plane.translate_404:
            self._swallow = True  # the contract's 400 replaces the replica's 404; its body is dropped
            message = f"{quote(head.path)} endpoint does not exist in server replicas"
            stats.replied(400)
            self.status = 400
            self._out.append(client.error_bytes(400, failure_body(message)))
            return
        self.status = status
        parts = [status_line(status), *header_lines]
        if length is not None:
            parts.append(b"content-length: %d\r\n" % length)
        elif head.method != b"HEAD" and status not in NO_BODY_STATUSES:
            if head.version == "1.1":
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunk_out = True
            else:
                client.keep_alive = False  # an HTTP/1.0 client reads the body until we close
        if not (client.keep_alive and head.keep_alive):
            parts.append(b"connection: close\r\n")
        elif head.version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self._out.append(b"".join(parts))

    def on_response_body(self, data: bytes) -> None:
        """A piece of the replica's body, collected until the end of this read."""
        if self._swallow:
            return
        if self._chunk_out:
            self._out += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            self._out.append(data)

    def flush(self) -> None:
        """Write what this read produced in one call (one syscall for head + body)."""
        out = self._out
        if out:
            self._client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_response_end(self) -> None:
        """The response is complete: the client connection moves on to its next request."""
        out = self._out
        if self._chunk_out:
            out.append(b"0\r\n\r\n")
        if out:
            self.flush()
        self._conn = None
        self._done = True
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.leave()
        if self._client.paused:
            self._unpause_client()
        self._client.finish(self)  # answered early? the parser reads (and drops) the rest of the body

    def on_upstream_error(self, exc: UpstreamError) -> None:
        """Retry elsewhere before the response started; break the client's response after."""
        self._conn = None
        if self._done:
            return
        if self._started:
            self._finish_broken()
            return
        self._failed(exc)

    def on_upstream_writable(self, writable: bool) -> None:
        """The replica's receive window filled or drained: pause or resume the client."""
        if writable:
            self._client.resume_reading("upstream")
        else:
            self._client.pause_reading("upstream")

    def on_upgraded(self, header_lines: list[bytes], upgrade: bytes, leftover: bytes) -> None:
        """The replica switched protocols: pass the 101 on, then bytes flow both ways."""
        if not self.head.upgrade:
            # Unasked: a tunnel would hand the client's next requests to this replica unparsed.
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.unbind()
            self.on_upstream_error(UpstreamResetError(f"Replica '{self._name}' switched protocols unasked"))
            return
        self._started = True
        self.status = 101
        self._plane.stats.replica(self._name).observe(101, perf_counter() - self._sent_at)
        parts = [status_line(101), *header_lines]
        parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n\r\n")
        self._client.write(b"".join(parts))
        if leftover:
            self._client.write(leftover)
        self._client.start_tunnel(self)
        if self.leftover and self._conn is not None:
            self._conn.write(self.leftover)
            self.leftover = b""

    def on_tunnel_data(self, data: bytes) -> None:
        """Bytes from the replica inside a tunnel."""
        self._client.write(data)

    def on_tunnel_closed(self) -> None:
        """The replica closed the tunnel: close the client's side too."""
        self._conn = None
        self._done = True
        self._leave()
        self._client.close()

    # -- internals -------------------------------------------------------------------------------

    def _try(self, upstream: UpstreamPool, name: str) -> None:
        self._tried += (name,)
        self._name = name
        self._sent_at = perf_counter()
        if self._upstream is not None:
            self._leave()
        self._upstream = upstream
        upstream.enter()
        conn = upstream.take() if retry.may_reuse(self.head.method) else None
        if conn is not None:
            self._bind(conn)
        else:
            self._plane.spawn(self._connect(upstream))

    async def _connect(self, upstream: UpstreamPool) -> None:
        try:
            conn = await upstream.connect()
        except UpstreamConnectError as exc:
            if not self._done and self._upstream is upstream:
                self._failed(exc)
            return
        if self._done or self._upstream is not upstream:
            conn.close()
            return
        self._bind(conn)

    def _bind(self, conn: UpstreamSide) -> None:
        if not retry.may_resend(self._sent_any, self._replay is not None):
            # The body was too large to keep and part of it went to a replica that failed.
            self._reply(502, failure_body(f"Replica '{self._name}' closed the connection mid-request"))
            conn.close()
            return
        self._conn = conn
        conn.bind(self, self.head.method == b"HEAD")
        if not self._request_head:
            self._request_head = encode_upstream_head(self.head, self._client.ip)
        body = self._replay if self._sent_any and self._replay is not None else self._unsent
        if body:
            conn.write(self._request_head + b"".join(body))
            self._unsent = []
            self._unsent_size = 0
        else:
            conn.write(self._request_head)
        self._sent_any = True
        conn.request_done = self.body_done
        client = self._client
        if client.writing_paused:
            conn.pause_reading()
        if client.paused:
            client.resume_reading("body")

    def _forward_body(self, framed: bytes) -> None:
        replay = self._replay
        if replay is not None:
            self._replay_size += len(framed)
            if self._replay_size > REPLAY_LIMIT:
                self._replay = None
            else:
                replay.append(framed)
        conn = self._conn
        if conn is not None:
            conn.write(framed)
            return
        self._unsent.append(framed)
        self._unsent_size += len(framed)
        if self._unsent_size > UNSENT_LIMIT:
            self._client.pause_reading("body")

    def _failed(self, exc: UpstreamError) -> None:
        """A try failed before the response started: app.dataplane.retry says what comes next."""
        failed, method, plane = self._name, self.head.method, self._plane
        upstream = self._upstream
        self._leave()
        if retry.counts_as_error(exc, method):
            plane.stats.replica(failed).errors += 1
        step = retry.after_failure(exc, method)
        if step == retry.TIMED_OUT:
            self._reply(504, failure_body(f"Replica '{failed}' did not answer in time"))
            return
        if step == retry.NOT_TWICE:
            # It may have been processed: repeating a POST elsewhere could apply it twice.
            self._reply(502, failure_body(f"Replica '{failed}' closed the connection mid-request"))
            return
        if upstream is not None and step == retry.SAME_AGAIN:
            # The replica closed an idle connection as we reused it: once more, on a fresh one.
            self._upstream = upstream
            upstream.enter()
            plane.spawn(self._connect(upstream))
            return
        if step == retry.NEXT_AND_REPORT:
            # Refused: the replica is gone. (A reset may be one bad request, so it only retries.)
            plane.routing.report_failure(failed, "connection refused")
        logger.info("request to %s failed (%s); trying the next replica", failed, exc)
        table = plane.routing.table
        candidate = retry.next_replica(table.ring, self._key, self._tried, plane.max_tries)
        if candidate is None or candidate not in table.upstreams:
            self._reply(503, plane.none_answered)
            return
        plane.stats.replica(failed).retries += 1
        self._try(table.upstreams[candidate], candidate)

    def _reply(self, status: int, body: bytes, *, close: bool = False) -> None:
        """Answer with an error of our own (nothing went to the client yet)."""
        self._done = self._started = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.unbind()
        self._leave()
        if close:
            self._client.keep_alive = False
        self._plane.stats.replied(status)
        self.status = status
        self._unpause_client()
        self._client.write(self._client.error_bytes(status, body))
        self._client.finish(self)

    def _finish_broken(self) -> None:
        """A failure after the response started: close the client so it sees a truncated response."""
        self._abandon_upstream()
        self._client.abort()

    def _unpause_client(self) -> None:
        """Lift this exchange's holds on the client: the rest of its body is read and dropped."""
        client = self._client
        if client.paused:
            client.resume_reading("body")
            client.resume_reading("upstream")

    def _leave(self) -> None:
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.leave()
