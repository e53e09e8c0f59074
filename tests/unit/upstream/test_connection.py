"""app.upstream.connection's rules: what a StreamConnection tells its sink, and when it may be reused.

A real StreamConnection on a stand-in transport (support.py), with a sink that records every callback.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from app.upstream.connection import StreamConnection
from app.upstream.errors import (
    StaleConnectionError,
    UnreadRequestError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeout,
)
from app.upstream.pool import UpstreamPool
from tests.polling import eventually
from tests.stand_ins import STAND_IN_BACKEND, StandInTransport, ok

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return STAND_IN_BACKEND


class Sink:
    """A ResponseSink that keeps every callback, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.error: UpstreamError | None = None

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def on_response_head(
        self, status: int, header_lines: list[bytes], length: int | None, chunked: bool
    ) -> None:
        self.events.append(("head", (status, b"".join(header_lines), length, chunked)))

    def on_response_body(self, data: bytes) -> None:
        self.events.append(("body", data))

    def on_response_end(self) -> None:
        self.events.append(("end", None))

    def on_upstream_error(self, exc: UpstreamError) -> None:
        self.error = exc
        self.events.append(("error", exc))

    def on_upgraded(self, header_lines: list[bytes], upgrade: bytes, leftover: bytes) -> None:
        self.events.append(("upgraded", (upgrade, leftover)))

    def on_tunnel_data(self, data: bytes) -> None:
        self.events.append(("tunnel", data))

    def on_tunnel_closed(self) -> None:
        self.events.append(("tunnel_closed", None))

    def on_upstream_writable(self, writable: bool) -> None:
        self.events.append(("writable", writable))

    def flush(self) -> None:
        self.events.append(("flush", None))


def connect(read_timeout: float = 5.0) -> tuple[UpstreamPool, StreamConnection, StandInTransport]:
    pool = UpstreamPool("10.0.1.1", 9001, read_timeout=read_timeout)
    conn = StreamConnection(pool, asyncio.get_running_loop())
    transport = StandInTransport(peer=("10.0.1.1", 9001))
    conn.connection_made(cast(asyncio.Transport, transport))
    return pool, conn, transport


def send(conn: StreamConnection, sink: Sink, request: bytes = b"GET / HTTP/1.1\r\n\r\n") -> None:
    conn.bind(sink, False)
    conn.write(request)
    conn.request_done = True


# -- reuse -----------------------------------------------------------------------------------------


async def test_a_kept_alive_response_goes_to_the_sink_and_the_connection_back_to_the_pool() -> None:
    pool, conn, transport = connect()
    sink = Sink()
    send(conn, sink)
    conn.data_received(ok(b"hello", b"X-A: 1"))
    assert sink.events[0] == ("head", (200, b"X-A: 1\r\n", 5, False))
    assert ("body", b"hello") in sink.events and sink.names[-1] == "end"
    assert pool.idle_count == 1 and pool.take() is conn
    assert not transport.is_closing()


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(ok(b"bye", b"Connection: close"), id="connection-close"),
        pytest.param(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nbye", id="http-1.0"),
    ],
)
async def test_a_response_that_says_close_is_not_reused(response: bytes) -> None:
    pool, conn, transport = connect()
    sink = Sink()
    send(conn, sink)
    conn.data_received(response)
    assert sink.names[-1] == "end"
    assert pool.idle_count == 0 and transport.closed


async def test_a_response_before_the_request_is_written_whole_is_not_reused() -> None:
    pool, conn, transport = connect()
    sink = Sink()
    conn.bind(sink, False)
    conn.write(b"POST / HTTP/1.1\r\ncontent-length: 100\r\n\r\nonly part")
    conn.data_received(ok(b"early"))  # the replica answered before reading the whole body
    assert sink.names[-1] == "end"
    assert pool.idle_count == 0 and transport.is_closing()


async def test_bytes_nobody_asked_for_drop_the_connection() -> None:
    pool, conn, transport = connect()
    sink = Sink()
    send(conn, sink)
    conn.data_received(ok(b"one"))
    conn.data_received(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
    assert transport.aborted
    conn.connection_lost(None)
    assert pool.idle_count == 0  # forgotten


# -- closed before a full response -----------------------------------------------------------------


async def test_a_fresh_connection_closed_unanswered_is_a_reset_not_stale() -> None:
    _, conn, _ = connect()
    sink = Sink()
    send(conn, sink)
    conn.connection_lost(None)
    assert isinstance(sink.error, UpstreamResetError)
    assert not isinstance(sink.error, (StaleConnectionError, UnreadRequestError))


@pytest.mark.parametrize("exc", [ConnectionResetError(), BrokenPipeError()], ids=["reset", "broken-pipe"])
async def test_a_reset_before_any_answer_left_the_request_unread(exc: OSError) -> None:
    # A socket closed with bytes unread sends a reset (an orderly close after reading sends a FIN).
    _, conn, _ = connect()
    sink = Sink()
    send(conn, sink)
    conn.connection_lost(exc)
    assert isinstance(sink.error, UnreadRequestError)


async def test_a_reset_after_part_of_the_answer_is_a_plain_reset() -> None:
    _, conn, _ = connect()
    sink = Sink()
    send(conn, sink)
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
    conn.connection_lost(ConnectionResetError())
    assert isinstance(sink.error, UpstreamResetError) and not isinstance(sink.error, UnreadRequestError)


def reused() -> tuple[StreamConnection, Sink, Sink]:
    """A connection that answered `first` and now carries the request of `second`."""
    _, conn, _ = connect()
    first, second = Sink(), Sink()
    send(conn, first)
    conn.data_received(ok(b"one"))
    send(conn, second)
    return conn, first, second


async def test_a_reused_connection_closed_unanswered_is_stale() -> None:
    conn, first, second = reused()
    conn.connection_lost(None)
    assert isinstance(second.error, StaleConnectionError)
    assert first.error is None


async def test_a_reused_connection_closed_mid_response_is_a_reset_not_stale() -> None:
    conn, _, second = reused()
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
    conn.connection_lost(None)
    assert isinstance(second.error, UpstreamResetError)
    assert not isinstance(second.error, StaleConnectionError)


async def test_a_body_without_length_ends_when_the_replica_closes() -> None:
    pool, conn, _ = connect()
    sink = Sink()
    send(conn, sink)
    conn.data_received(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
    conn.data_received(b"part two")
    conn.connection_lost(None)
    assert sink.error is None and sink.names[-1] == "end"
    assert b"".join(data for name, data in sink.events if name == "body") == b"part one, part two"
    assert pool.idle_count == 0


# -- timeouts --------------------------------------------------------------------------------------


async def test_silence_beyond_the_read_timeout_is_a_timeout() -> None:
    _, conn, transport = connect(read_timeout=0.02)
    sink = Sink()
    send(conn, sink)
    await eventually(lambda: sink.error, timeout=2)
    assert isinstance(sink.error, UpstreamTimeout)
    assert transport.aborted


async def test_no_timeout_while_paused_for_a_slow_client() -> None:
    _, conn, transport = connect(read_timeout=0.02)
    sink = Sink()
    send(conn, sink)
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart")
    conn.pause_reading()
    assert not transport.reading
    loop = asyncio.get_running_loop()
    waited = loop.create_future()
    loop.call_later(0.1, waited.set_result, None)  # five read timeouts
    await waited
    assert sink.error is None and not transport.is_closing()
    conn.resume_reading()
    assert transport.reading
    await eventually(lambda: sink.error, timeout=2)  # the replica's own silence still counts
    assert isinstance(sink.error, UpstreamTimeout)


# -- flow control ----------------------------------------------------------------------------------


async def test_a_full_replica_window_tells_the_sink() -> None:
    _, conn, _ = connect()
    sink = Sink()
    send(conn, sink)
    conn.pause_writing()
    conn.resume_writing()
    assert [data for name, data in sink.events if name == "writable"] == [False, True]


async def test_a_connection_paused_for_one_response_reads_again_for_the_next() -> None:
    pool, conn, transport = connect()
    sink = Sink()
    send(conn, sink)
    conn.pause_reading()
    conn.data_received(ok(b"one"))  # the rest was already buffered
    assert transport.reading  # idle: it must read, to notice the replica closing it
    assert pool.take() is conn


# -- the tunnel ------------------------------------------------------------------------------------


async def test_a_101_turns_the_connection_into_a_tunnel() -> None:
    pool, conn, _ = connect(read_timeout=0.02)
    sink = Sink()
    send(conn, sink, b"GET /ws HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    conn.data_received(switched + b"hi")
    assert sink.events == [("upgraded", (b"websocket", b"hi"))]
    conn.data_received(b"HTTP/1.1 200 OK\r\n\r\n")  # no longer HTTP: passed through as is
    assert sink.events[-1] == ("tunnel", b"HTTP/1.1 200 OK\r\n\r\n")
    loop = asyncio.get_running_loop()
    waited = loop.create_future()
    loop.call_later(0.1, waited.set_result, None)  # a quiet tunnel is not a timeout
    await waited
    assert sink.error is None
    conn.connection_lost(None)
    assert sink.names[-1] == "tunnel_closed"
    assert pool.idle_count == 0
