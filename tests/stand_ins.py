"""The real data plane in process, with stand-in transports: no socket is ever opened.

The approach of bench/dataplane_bench.py, with a record of everything: a `ClientConnection` gets a
`StandInTransport` and is fed bytes as uvloop would feed them; the `UpstreamPool`s open their connections
through a `StandInLoop`, whose `create_connection` hands each `StreamConnection` a `StandInTransport` too
(or refuses, like a replica that is gone). A test plays both the client and the replicas: it reads what
each transport was written, answers through the protocol's own callbacks, and checks what each transport
was told to do (pause, resume, close, abort, half-close).

Tests run on anyio's asyncio backend with this loop: `anyio_backend` returns `STAND_IN_BACKEND`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from httptools import HttpResponseParser

from app.control.routing import RoutingTable
from app.dataplane.exchange import DataPlane
from app.dataplane.front import Front, FrontLimits
from app.dataplane.keys import make_key_extractor
from app.dataplane.server import ClientConnection
from app.errors import NoReplicasError
from app.settings import Settings
from app.upstream.connection import StreamConnection
from app.upstream.pool import UpstreamPool

CLIENT_PEER = ("10.0.0.7", 40000)


class StandInTransport:
    """The socket's side of a transport, minus the socket: keeps what it was written and told."""

    def __init__(self, peer: tuple[str, int] = CLIENT_PEER) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.reading = True  # False between pause_reading() and resume_reading()
        self.pauses = 0  # pause_reading() calls
        self.closed = self.aborted = self.eof_written = False
        self.buffered = 0  # what get_write_buffer_size() reports

    @property
    def data(self) -> bytes:
        """Everything written so far, in order."""
        return b"".join(self.written)

    def take(self) -> bytes:
        """Everything written since the last take()."""
        data = self.data
        self.written.clear()
        return data

    def write(self, data: bytes) -> None:
        if self.is_closing():
            raise AssertionError(f"written after close: {data!r}")
        self.written.append(bytes(data))

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return ("127.0.0.1", 5000)
        return default


@dataclass
class Link:
    """One connection the LB opened to a stand-in replica: its transport and the LB's protocol on it."""

    transport: StandInTransport
    conn: StreamConnection

    @property
    def received(self) -> bytes:
        """What the LB sent the replica on this connection."""
        return self.transport.data

    def answer(self, response: bytes) -> None:
        """The replica sends `response` (in one read)."""
        self.conn.data_received(response)

    def hang_up(self) -> None:
        """The replica closes the connection (the LB's side sees EOF, then the loss)."""
        self.conn.eof_received()
        self.conn.connection_lost(None)


@dataclass
class Replica:
    """A stand-in replica: the connections the LB opened to it, and whether it still accepts more."""

    name: str
    pool: UpstreamPool
    accepting: bool = True
    links: list[Link] = field(default_factory=list)
    refused: int = 0  # connects refused

    @property
    def received(self) -> bytes:
        """Everything the LB sent this replica, on all its connections."""
        return b"".join(link.received for link in self.links)

    @property
    def link(self) -> Link:
        """The one (or the latest) connection to it."""
        assert self.links, f"the LB opened no connection to {self.name}"
        return self.links[-1]


class StandInLoop(asyncio.SelectorEventLoop):
    """An event loop whose outgoing connections reach stand-in replicas, never a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.replicas: dict[tuple[str, int], Replica] = {}

    async def create_connection(  # type: ignore[override]  # only the arguments the LB passes
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, **kwargs: Any
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        replica = self.replicas.get((host, port))
        if replica is None or not replica.accepting:
            if replica is not None:
                replica.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")
        protocol = protocol_factory()
        transport = StandInTransport(peer=(host, port))
        protocol.connection_made(cast(asyncio.Transport, transport))
        if isinstance(protocol, StreamConnection):  # asyncio.open_connection (a probe) is not a Link
            replica.links.append(Link(transport, protocol))
        return cast(asyncio.Transport, transport), protocol


STAND_IN_BACKEND: tuple[str, dict[str, object]] = ("asyncio", {"loop_factory": StandInLoop})


class InOrder:
    """A ring that sends key `b` to replica b first, then on around the list; other keys start at the top."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def lookup(self, key: str) -> str:
        return next(self.successors(key))

    def successors(self, key: str) -> Iterator[str]:
        if not self.names:
            raise NoReplicasError("No replicas available to serve the request")
        start = self.names.index(key) if key in self.names else 0
        yield from self.names[start:] + self.names[:start]


class Routing:
    """A fixed routing table; failures reported to it are kept, in order."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.reported: list[tuple[str, str]] = []

    def report_failure(self, name: str, reason: str) -> None:
        self.reported.append((name, reason))


LIMITS = FrontLimits.from_settings(Settings(_env_file=None))  # the defaults a user gets


@dataclass
class Response:
    """One response as the client read it."""

    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


def parse_responses(data: bytes) -> list[Response]:
    """The complete responses in `data`, in order."""

    class Reader:
        def __init__(self) -> None:
            self.done: list[Response] = []
            self.headers: dict[bytes, bytes] = {}
            self.body: list[bytes] = []

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers[name.lower()] = value

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.done.append(Response(parser.get_status_code(), self.headers, b"".join(self.body)))
            self.headers, self.body = {}, []

    reader = Reader()
    parser = HttpResponseParser(reader)
    parser.feed_data(data)
    return reader.done


def ok(body: bytes, *headers: bytes) -> bytes:
    """A replica's keep-alive 200 with a length."""
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


class Rig:
    """A data plane over stand-in replicas, and client connections into it (run inside a StandInLoop)."""

    def __init__(
        self, names: Sequence[str] = ("a", "b", "c"), *, read_timeout: float = 5.0, max_tries: int = 3
    ) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, StandInLoop), "run with anyio_backend = STAND_IN_BACKEND"
        self.loop = loop
        self.replicas: dict[str, Replica] = {}
        for port, name in enumerate(names, start=9001):
            pool = UpstreamPool("10.0.1.1", port, read_timeout=read_timeout)
            self.replicas[name] = loop.replicas[("10.0.1.1", port)] = Replica(name, pool)
        table = RoutingTable(InOrder(names), {name: r.pool for name, r in self.replicas.items()})
        self.routing = Routing(table)
        # The key is ?id=<replica>: InOrder sends it there first.
        self.plane = DataPlane(self.routing, make_key_extractor("query", "id"), max_tries=max_tries)
        self.front = Front(LIMITS, lambda path: False)
        self.front.data_plane = self.plane
        self.state = SimpleNamespace(connections=set(), total_requests=0)

    def open_client(self) -> Client:
        """A new client connection to the LB."""
        transport = StandInTransport()
        conn = ClientConnection(cast(Any, None), cast(Any, self.state), {}, self.loop, front=self.front)
        conn.connection_made(cast(asyncio.Transport, transport))
        return Client(conn, transport)

    async def settle(self) -> None:
        """Let the loop run until no upstream connect is in progress (each needs a few turns)."""
        for _ in range(100):
            if not self.plane.tasks:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"connects still running: {self.plane.tasks}")

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per replica, as the pools count them."""
        return {name: r.pool.in_flight for name, r in self.replicas.items()}


@dataclass
class Client:
    """One client connection: the LB's protocol and the transport it writes to."""

    conn: ClientConnection
    transport: StandInTransport

    def send(self, data: bytes) -> None:
        """The client's bytes arrive (in one read)."""
        self.conn.data_received(data)

    def responses(self) -> list[Response]:
        """What the client has received so far, parsed."""
        return parse_responses(self.transport.data)

    @property
    def closed(self) -> bool:
        """Whether the LB closed (or broke) the connection."""
        return self.transport.is_closing()
