"""Drive the LB over HTTP: an httpx client on a lean keep-alive transport, and bounded request passes.

httpx's default transport (httpcore + h11, pure Python) costs ~0.5 ms of client CPU per request on this
2-core machine, so the client, not the LB, would set the pace (~1,000 req/s). FastTransport keeps httpx's
API and error types but speaks HTTP/1.1 itself over asyncio with httptools' C parser (the parser uvicorn
uses), which brings the client to ~3x that. `--transport httpx` switches back to the stock transport.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httptools
import httpx

TransportName = Literal["fast", "httpx"]
TRANSPORTS: tuple[TransportName, ...] = ("fast", "httpx")
RawResponse = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[RawResponse] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.ReadError("connection closed by the server"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        # Only meaningful while the parser is inside the message, so read it here.
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(self, head: bytes, body: bytes, timeout: float) -> RawResponse:
        """Send one request and wait for its whole response."""
        assert self.transport is not None
        self.headers, self.body = [], []
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RawResponse] = loop.create_future()
        self.waiter = waiter
        self.transport.write(head + body if body else head)
        # call_later, not wait_for: wait_for wraps every await in a new task, a third of the client's CPU.
        timer = loop.call_later(timeout, self._fail, httpx.ReadTimeout(f"no response within {timeout:g}s"))
        try:
            return await waiter
        finally:
            timer.cancel()

    def reusable(self) -> bool:
        return not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class FastTransport(httpx.AsyncBaseTransport):
    """Plain-HTTP/1.1 keep-alive transport for httpx: at most `max_connections` sockets, no TLS."""

    def __init__(self, max_connections: int = 64, connect_timeout: float = 5.0, read_timeout: float = 10.0):
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http" or url.host is None:
            raise httpx.UnsupportedProtocol(f"FastTransport speaks plain http only, not {url}")
        origin = (url.host, url.port or 80)
        body = await request.aread()
        lines = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            lines += [name, b": ", value, b"\r\n"]
        lines.append(b"\r\n")
        head = b"".join(lines)
        async with self._slots:
            conn = await self._checkout(origin)
            try:
                status, headers, content = await conn.exchange(head, body, self._read_timeout)
            except BaseException:
                conn.close()
                raise
            if conn.reusable():
                self._idle.setdefault(origin, []).append(conn)
            else:
                conn.close()
        # Body already de-chunked by the parser: drop framing headers so httpx does not re-frame it.
        kept = [(k, v) for k, v in headers if k.lower() not in (b"transfer-encoding", b"content-encoding")]
        return httpx.Response(status, headers=kept, content=content, request=request)

    async def _checkout(self, origin: tuple[str, int]) -> _Connection:
        idle = self._idle.get(origin, [])
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, origin[0], origin[1]), self._connect_timeout
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connect to {origin} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connect to {origin} failed: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def make_transport(name: TransportName, concurrency: int, timeout: float) -> httpx.AsyncBaseTransport:
    """FastTransport, or httpx's own (httpcore + h11) to compare; both hold at most `concurrency` sockets."""
    if name == "fast":
        return FastTransport(concurrency, timeout, timeout)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncHTTPTransport(limits=limits)


def replica_of(message: str) -> str:
    """The replica name in "Hello from Server: <name>", parsed as the contract's clients do."""
    return message.split(":")[-1].strip()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it was sent and answered (seconds from the pass start), who served it."""

    key: str
    sent: float
    done: float
    status: int  # 0: no HTTP response (transport error or not sent before the deadline)
    replica: str | None
    error: str | None = None


@dataclass
class PassResult:
    """Every request of one pass, in key order."""

    outcomes: list[Outcome]
    seconds: float
    started_at: float = 0.0  # time.time() when the pass began
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 200 and o.replica is not None)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.ok

    @property
    def rate(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds > 0 else 0.0

    def mapping(self) -> dict[str, str]:
        """key -> replica for the successful requests (the last answer wins for repeated keys)."""
        return {o.key: o.replica for o in self.outcomes if o.status == 200 and o.replica is not None}


async def fetch_keys(
    transport: httpx.AsyncBaseTransport,
    base_url: str,
    keys: Sequence[str],
    *,
    concurrency: int,
    max_seconds: float,
    timeout: float = 10.0,
    path: str = "/home",
    on_done: Callable[[], None] | None = None,
    pace: float | None = None,
    origin: float | None = None,
) -> PassResult:
    """GET base_url+path?id=<key> for every key, at most `concurrency` in flight, stopping at `max_seconds`.

    Requests go straight to the transport: AsyncClient's cookie, auth and redirect layers, which these
    GETs do not use, cost ~100 µs of CPU per request here. `pace` (requests/s) spaces the sends evenly.
    Times are seconds since `origin` (a loop.time() value; default: now). Keys not sent before the
    deadline are recorded with status 0 and error "deadline".
    """
    outcomes: list[Outcome | None] = [None] * len(keys)
    extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
    prefix = f"{base_url.rstrip('/')}{path}?id="
    loop = asyncio.get_running_loop()
    start = loop.time() if origin is None else origin
    started_at = time.time() - (loop.time() - start)
    deadline = loop.time() + max_seconds
    indices = iter(range(len(keys)))

    async def get(key: str) -> tuple[int, str | None, str | None]:
        response = await transport.handle_async_request(
            httpx.Request("GET", prefix + key, extensions=extensions)
        )
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        if response.status_code != 200:
            return response.status_code, None, body[:200].decode(errors="replace")
        return 200, replica_of(str(json.loads(body)["message"])), None

    async def worker() -> None:
        for i in indices:
            key = keys[i]
            if pace:
                delay = start + i / pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = loop.time()
            if sent >= deadline:
                outcomes[i] = Outcome(key, sent - start, sent - start, 0, None, "deadline")
                continue
            try:
                status, replica, error = await get(key)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                status, replica, error = 0, None, f"{type(exc).__name__}: {exc}"
            outcomes[i] = Outcome(key, sent - start, loop.time() - start, status, replica, error)
            if on_done is not None:
                on_done()

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(keys))))))
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(keys)
    return PassResult(done, loop.time() - start, started_at)
