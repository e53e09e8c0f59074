"""app.upstream.pool against real servers: a byte-scripted one for edge cases, uvicorn for interop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from app.upstream.pool import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamResetError,
    UpstreamTimeout,
    encode_request,
)
from tests.polling import eventually
from tests.ports import bind_loopback
from tests.upstream_servers import (
    Request,
    ScriptedServer,
    ServerConnection,
    echo_app,
    http_response,
    keep_alive,
    serve_asgi,
)

pytestmark = pytest.mark.anyio

HOST = [(b"host", b"test")]


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, bool]]:
    """The proxy runs on uvloop in production, asyncio elsewhere: test on both."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def uvicorn_port() -> Iterator[int]:
    with serve_asgi(echo_app) as port:
        yield port


def pool_for(port: int, *, max_idle: int = 64) -> UpstreamPool:
    return UpstreamPool("127.0.0.1", port, connect_timeout=2.0, read_timeout=5.0, max_idle=max_idle)


def ok(body: bytes) -> bytes:
    return http_response(200, [(b"Content-Type", b"text/plain")], body)


def echo_target(request: Request, conn: ServerConnection) -> bytes:
    return ok(request.target)


# -- requests on the wire --------------------------------------------------------------------------


def test_request_is_one_buffer_with_content_length_only_when_needed() -> None:
    assert encode_request(b"GET", b"/a?b=1", [(b"Host", b"x"), (b"x-a", b"1")], b"") == (
        b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nx-a: 1\r\n\r\n"
    )
    assert (
        encode_request(b"POST", b"/", HOST, b"")
        == b"POST / HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\n\r\n"
    )
    assert encode_request(b"DELETE", b"/", HOST, b"xyz") == (
        b"DELETE / HTTP/1.1\r\nhost: test\r\ncontent-length: 3\r\n\r\nxyz"
    )


async def test_sequential_gets_reuse_one_connection() -> None:
    async with ScriptedServer(keep_alive(echo_target)) as server:
        pool = pool_for(server.port)
        for i in range(5):
            response = await pool.request(b"GET", b"/n/%d" % i, HOST)
            assert (response.status, response.body) == (200, b"/n/%d" % i)
        assert server.accepted == 1
        assert pool.idle_count == 1
        assert [r.head for r in server.requests[:1]] == [b"GET /n/0 HTTP/1.1\r\nhost: test\r\n\r\n"]
        await pool.close()


async def test_post_body_echo_with_content_length(uvicorn_port: int) -> None:
    pool = pool_for(uvicorn_port)
    response = await pool.request(b"POST", b"/echo", HOST, b"hello world")
    assert response.status == 200
    assert response.body == b"hello world"
    headers = dict(response.headers)
    assert headers[b"x-method"] == b"POST"
    assert headers[b"x-content-length"] == b"11"
    assert b"content-length" not in headers
    empty = await pool.request(b"POST", b"/echo", HOST)
    assert dict(empty.headers)[b"x-content-length"] == b"0"
    # A POST is not safe to send twice: it never takes an idle connection (HAProxy's http-reuse safe).
    assert dict(empty.headers)[b"x-client-port"] != headers[b"x-client-port"]
    await pool.close()


async def test_chunked_response_split_across_writes_is_dechunked() -> None:
    async def handle(conn: ServerConnection) -> None:
        while await conn.read_request() is not None:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
            pieces = [
                head[:7],
                head[7:30],
                head[30:],
                b"5\r\nhel",
                b"lo\r\n",
                b"6\r\n worl",
                b"d\r\n0\r\n",
                b"\r\n",
            ]
            await conn.send(*pieces, pause=0.002)

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        for _ in range(2):
            response = await pool.request(b"GET", b"/", HOST)
            assert (response.status, response.headers, response.body) == (
                200,
                [(b"X-A", b"1")],
                b"hello world",
            )
        assert server.accepted == 1
        await pool.close()


async def test_chunked_trailers_are_not_returned_as_headers() -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
    )
    async with ScriptedServer(keep_alive(lambda request, conn: reply)) as server:
        pool = pool_for(server.port)
        response = await pool.request(b"GET", b"/", HOST)
        assert (response.headers, response.body) == ([], b"abc")
        await pool.close()


async def test_uvicorn_streamed_response_of_1mb(uvicorn_port: int) -> None:
    pool = pool_for(uvicorn_port)
    size = 1024 * 1024 + 5
    response = await pool.request(b"GET", b"/stream?n=%d" % size, HOST)
    assert len(response.body) == size
    assert response.body[:3] == b"\x00\x00\x00" and response.body[-1] == 16
    await pool.close()


async def test_large_bodies_both_ways(uvicorn_port: int) -> None:
    pool = pool_for(uvicorn_port)
    body = bytes(range(256)) * 4096  # 1 MiB
    response = await pool.request(b"PUT", b"/echo", HOST, body)
    assert response.body == body
    assert dict(response.headers)[b"x-content-length"] == str(len(body)).encode()
    await pool.close()


async def test_head_ends_at_headers_and_the_connection_stays_usable() -> None:
    def reply(request: Request, conn: ServerConnection) -> bytes:
        if request.method == b"HEAD":
            # Announces a body it must not send: the client must not wait for it.
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-A: 1\r\n\r\n"
        return ok(b"after head")

    async with ScriptedServer(keep_alive(reply)) as server:
        pool = pool_for(server.port)
        head = await asyncio.wait_for(pool.request(b"HEAD", b"/", HOST), 5)
        assert (head.status, head.headers, head.body) == (200, [(b"X-A", b"1")], b"")
        get = await pool.request(b"GET", b"/", HOST)
        assert get.body == b"after head"
        assert server.accepted == 1
        await pool.close()


async def test_head_against_uvicorn(uvicorn_port: int) -> None:
    pool = pool_for(uvicorn_port)
    head = await asyncio.wait_for(pool.request(b"HEAD", b"/echo", HOST), 5)
    assert (head.status, head.body) == (200, b"")
    get = await pool.request(b"GET", b"/echo", HOST)
    assert dict(get.headers)[b"x-client-port"] == dict(head.headers)[b"x-client-port"]
    await pool.close()


async def test_head_response_with_a_stray_body_is_not_reused() -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
    async with ScriptedServer(keep_alive(lambda request, conn: reply)) as server:
        pool = pool_for(server.port)
        head = await pool.request(b"HEAD", b"/", HOST)
        assert (head.status, head.body) == (200, b"")
        assert (await pool.request(b"GET", b"/", HOST)).body == b"body"
        assert server.accepted == 2
        await pool.close()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses_keep_the_connection(uvicorn_port: int, status: int) -> None:
    pool = pool_for(uvicorn_port)
    first = await asyncio.wait_for(pool.request(b"GET", b"/status/%d" % status, HOST), 5)
    assert (first.status, first.body) == (status, b"")
    second = await pool.request(b"GET", b"/status/%d" % status, HOST)
    assert dict(second.headers)[b"x-client-port"] == dict(first.headers)[b"x-client-port"]
    await pool.close()


async def test_interim_1xx_response_is_skipped() -> None:
    reply = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final")
    async with ScriptedServer(keep_alive(lambda request, conn: reply)) as server:
        pool = pool_for(server.port)
        response = await pool.request(b"GET", b"/", HOST)
        assert (response.status, response.headers, response.body) == (
            200,
            [(b"Content-Type", b"text/plain")],
            b"final",
        )
        await pool.close()


async def test_hop_by_hop_and_content_length_are_stripped_names_kept_as_received() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nX-First: 1\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    )
    async with ScriptedServer(keep_alive(lambda request, conn: chunked)) as server:
        pool = pool_for(server.port)
        response = await pool.request(b"GET", b"/", HOST)
        assert response.headers == [(b"X-First", b"1"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")]
        assert response.body == b"ok"
        assert pool.idle_count == 1
        await pool.close()


# -- connection lifetime ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(http_response(200, [(b"Connection", b"close")], b"bye"), id="connection-close"),
        pytest.param(http_response(200, [], b"bye", version=b"HTTP/1.0"), id="http-1.0"),
    ],
)
async def test_connection_close_responses_are_not_pooled(reply: bytes) -> None:
    # The server would keep the connection open: the client must still not reuse it.
    async with ScriptedServer(keep_alive(lambda request, conn: reply)) as server:
        pool = pool_for(server.port)
        for expected_connections in (1, 2):
            response = await pool.request(b"GET", b"/", HOST)
            assert response.body == b"bye"
            assert pool.idle_count == 0
            assert server.accepted == expected_connections
        await eventually(lambda: server.finished == 2)
        await pool.close()


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
async def test_body_delimited_by_connection_close(version: bytes) -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        head = http_response(200, [(b"X-A", b"1")], version=version, content_length=False)
        await conn.send(head, b"part one, ", b"part two", pause=0.002)

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        response = await pool.request(b"GET", b"/", HOST)
        assert (response.headers, response.body) == ([(b"X-A", b"1")], b"part one, part two")
        assert pool.idle_count == 0
        await pool.close()


async def test_close_before_full_body_is_a_reset_even_for_get() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        with pytest.raises(UpstreamResetError):
            await pool.request(b"GET", b"/", HOST)
        assert server.accepted == 1  # bytes arrived, so no transparent retry
        await pool.close()


async def test_fresh_connection_closed_without_answer_is_a_reset() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        with pytest.raises(UpstreamResetError):
            await pool.request(b"GET", b"/", HOST)
        assert server.accepted == 1  # only a reused connection is retried
        await pool.close()


def fresh(request: Request, conn: ServerConnection) -> bytes:
    return ok(b"" if request.method == b"HEAD" else b"fresh " + request.method)


async def close_idle_connection_on_reuse(conn: ServerConnection) -> None:
    """Connection 0 answers once, then reads the next request and closes without a byte: the
    race where a replica times out an idle keep-alive connection just as the request arrives."""
    if conn.index == 0:
        await conn.read_request()
        await conn.send(ok(b"first"))
        await conn.read_request()
        return
    await keep_alive(fresh)(conn)


@pytest.mark.parametrize("method", [b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS"])
async def test_idempotent_request_on_stale_connection_is_retried_once(method: bytes) -> None:
    async with ScriptedServer(close_idle_connection_on_reuse) as server:
        pool = pool_for(server.port)
        assert (await pool.request(b"GET", b"/", HOST)).body == b"first"
        response = await pool.request(method, b"/", HOST)
        assert response.status == 200
        assert response.body == (b"" if method == b"HEAD" else b"fresh " + method)
        assert server.accepted == 2
        assert [r.method for r in server.requests] == [b"GET", method, method]
        await pool.close()


@pytest.mark.parametrize("method", [b"POST", b"PATCH"])
async def test_non_idempotent_request_never_takes_an_idle_connection(method: bytes) -> None:
    # On the idle connection the replica would read it and close: a failure that cannot be told apart
    # from one after processing. On a new connection it is answered, and sent exactly once.
    async with ScriptedServer(close_idle_connection_on_reuse) as server:
        pool = pool_for(server.port)
        assert (await pool.request(b"GET", b"/", HOST)).body == b"first"
        assert pool.idle_count == 1
        assert (await pool.request(method, b"/", HOST, b"vote")).status == 200
        assert [r.method for r in server.requests] == [b"GET", method]
        assert server.accepted == 2
        await pool.close()


async def test_idle_connection_closed_by_server_is_dropped_from_the_pool() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        await conn.send(ok(b"once"))
        if conn.index == 0:
            return  # closes this keep-alive connection while it is idle
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        await pool.request(b"POST", b"/", HOST)
        await eventually(lambda: pool.idle_count == 0)
        response = await pool.request(b"POST", b"/", HOST)
        assert response.body == b"once"
        assert server.accepted == 2
        await pool.close()


@pytest.mark.parametrize("writes", [1, 2], ids=["same-segment", "later"])
async def test_bytes_after_a_complete_response_close_the_connection(writes: int) -> None:
    extra = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"

    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        if conn.index == 0:
            await conn.send(*([ok(b"one") + extra] if writes == 1 else [ok(b"one"), extra]))
        else:
            await conn.send(ok(b"two"))
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        assert (await pool.request(b"GET", b"/", HOST)).status == 200
        await eventually(lambda: server.finished == 1)
        assert pool.idle_count == 0
        assert (await pool.request(b"GET", b"/", HOST)).body == b"two"
        await pool.close()


async def test_early_answer_while_the_body_is_still_queued_is_not_pooled() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")  # the head only: the body stays unread
        await conn.send(http_response(413, [], b"too big"))
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        # Far more than loopback socket buffers hold, so most of it is still in the client's queue.
        response = await pool.request(b"POST", b"/", HOST, b"x" * (64 * 1024 * 1024))
        assert (response.status, response.body) == (413, b"too big")
        assert pool.idle_count == 0
        await eventually(lambda: server.finished == 1)


async def test_malformed_response_is_a_reset() -> None:
    async with ScriptedServer(keep_alive(lambda request, conn: b"SMTP ready\r\n\r\n")) as server:
        pool = pool_for(server.port)
        with pytest.raises(UpstreamResetError, match="malformed"):
            await pool.request(b"GET", b"/", HOST)
        assert pool.idle_count == 0
        await pool.close()


# -- failures and limits ---------------------------------------------------------------------------


async def test_connect_refused() -> None:
    # Bound but not listening: the kernel answers SYN with RST, deterministically.
    sock = bind_loopback()
    try:
        pool = pool_for(sock.getsockname()[1])
        with pytest.raises(UpstreamConnectError, match="cannot connect"):
            await pool.request(b"GET", b"/", HOST)
    finally:
        sock.close()


async def test_connect_timeout() -> None:
    # A listener with a full accept queue drops further SYNs, so connect() hangs.
    sock = bind_loopback()
    sock.listen(0)
    fillers: list[socket.socket] = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(sock.getsockname())
            fillers.append(filler)
        pool = UpstreamPool("127.0.0.1", sock.getsockname()[1], connect_timeout=0.1)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamConnectError, match="TimeoutError"):
            await pool.request(b"GET", b"/", HOST)
        assert loop.time() - start < 2
    finally:
        for filler in fillers:
            filler.close()
        sock.close()


async def test_read_timeout_fires_quickly_and_drops_the_connection() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        await conn.send(ok(b"fast"))
        await conn.read_request()  # and never answer
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = UpstreamPool("127.0.0.1", server.port, read_timeout=0.1)
        assert (await pool.request(b"GET", b"/", HOST)).body == b"fast"
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(UpstreamTimeout):
            await pool.request(b"GET", b"/", HOST)
        assert 0.09 <= loop.time() - start < 2
        assert pool.idle_count == 0
        await eventually(lambda: server.finished == 1)
        await pool.close()


async def test_cancelled_request_drops_its_connection() -> None:
    async def handle(conn: ServerConnection) -> None:
        await conn.read_request()
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        task = asyncio.ensure_future(pool.request(b"GET", b"/", HOST))
        await eventually(lambda: len(server.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: server.finished == 1)
        assert pool.idle_count == 0
        await pool.close()


async def test_100_concurrent_requests_each_get_their_own_answer(uvicorn_port: int) -> None:
    pool = pool_for(uvicorn_port, max_idle=100)
    bodies = [b"request %d " % i * (i + 1) for i in range(100)]
    responses = await asyncio.gather(*(pool.request(b"POST", b"/echo", HOST, body) for body in bodies))
    assert [r.body for r in responses] == bodies
    assert 1 <= pool.idle_count <= 100
    again = await asyncio.gather(*(pool.request(b"POST", b"/echo", HOST, body) for body in bodies))
    assert [r.body for r in again] == bodies
    await pool.close()


async def test_idle_connections_are_capped_at_max_idle() -> None:
    all_arrived = asyncio.Event()

    async def handle(conn: ServerConnection) -> None:
        while (request := await conn.read_request()) is not None:
            if conn.server.accepted == 10:
                all_arrived.set()
            # Hold every answer until ten requests are in flight, so ten connections exist.
            await all_arrived.wait()
            await conn.send(ok(request.target))

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port, max_idle=3)
        responses = await asyncio.gather(*(pool.request(b"GET", b"/%d" % i, HOST) for i in range(10)))
        assert [r.body for r in responses] == [b"/%d" % i for i in range(10)]
        assert server.accepted == 10
        assert pool.idle_count == 3
        await eventually(lambda: server.finished == 7)
        await pool.close()
        await eventually(lambda: server.finished == 10)


async def test_max_idle_zero_never_pools() -> None:
    async with ScriptedServer(keep_alive(echo_target)) as server:
        pool = pool_for(server.port, max_idle=0)
        for _ in range(3):
            await pool.request(b"GET", b"/", HOST)
        assert server.accepted == 3
        assert pool.idle_count == 0
        await pool.close()


async def test_close_closes_idle_connections_and_fails_later_requests_fast() -> None:
    async with ScriptedServer(keep_alive(echo_target)) as server:
        pool = pool_for(server.port)
        await pool.request(b"GET", b"/", HOST)
        assert not pool.closed
        await pool.close()
        assert pool.closed
        assert pool.idle_count == 0
        await eventually(lambda: server.finished == 1)
        with pytest.raises(UpstreamConnectError, match="closed"):
            await pool.request(b"GET", b"/", HOST)
        assert server.accepted == 1


async def test_in_flight_request_completes_after_close_and_its_connection_is_not_pooled() -> None:
    release = asyncio.Event()

    async def handle(conn: ServerConnection) -> None:
        request = await conn.read_request()
        assert request is not None
        await release.wait()
        await conn.send(ok(b"late"))
        await conn.wait_client_close()

    async with ScriptedServer(handle) as server:
        pool = pool_for(server.port)
        task = asyncio.ensure_future(pool.request(b"GET", b"/", HOST))
        await eventually(lambda: len(server.requests) == 1)
        await pool.close()
        release.set()
        assert (await task).body == b"late"
        assert pool.idle_count == 0
        await eventually(lambda: server.finished == 1)
