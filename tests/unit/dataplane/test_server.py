"""app.dataplane.server's rules, driven through a real ClientConnection with stand-in transports.

Keep-alive and close, pipelined requests answered in order, and the request-smuggling refusals: each
test plays the client and the replicas byte for byte (see support.py), without a socket.
"""

from __future__ import annotations

import json

import pytest

from tests.stand_ins import STAND_IN_BACKEND, Rig, ok

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return STAND_IN_BACKEND


def get(key: str, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"GET /home?id=%b %b\r\nHost: lb\r\n%b\r\n" % (key.encode(), version, extra)


# -- keep-alive ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, headers",
    [
        pytest.param(b"HTTP/1.1", (), id="http-1.1"),
        pytest.param(b"HTTP/1.0", (b"Connection: keep-alive",), id="http-1.0-keep-alive"),
    ],
)
async def test_keep_alive_two_requests_on_one_connection_both_answered(
    version: bytes, headers: tuple[bytes, ...]
) -> None:
    rig = Rig()
    client = rig.open_client()
    for n in (1, 2):
        client.send(get("a", *headers, version=version))
        await rig.settle()
        rig.replicas["a"].link.answer(ok(b"answer %d" % n))
    answers = client.responses()
    assert [(r.status, r.body) for r in answers] == [(200, b"answer 1"), (200, b"answer 2")]
    assert all(r.headers.get(b"connection", b"keep-alive") == b"keep-alive" for r in answers)
    assert not client.closed and not client.transport.eof_written
    assert client.transport.reading  # and it reads the next request


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(get("a", b"Connection: close"), id="connection-close"),
        pytest.param(get("a", version=b"HTTP/1.0"), id="http-1.0"),
    ],
)
async def test_close_requested_closes_after_the_answer(request_: bytes) -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(request_)
    await rig.settle()
    assert not client.closed  # not before the answer
    rig.replicas["a"].link.answer(ok(b"bye"))
    [answer] = client.responses()
    assert (answer.status, answer.body, answer.headers[b"connection"]) == (200, b"bye", b"close")
    assert client.transport.closed


# -- pipelining ------------------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_request_order() -> None:
    rig = Rig()
    client = rig.open_client()
    first, second = rig.replicas["a"], rig.replicas["b"]
    client.send(get("a") + get("b"))  # two requests in one read, to two replicas
    answered: list[str] = []
    for _ in range(4):
        await rig.settle()
        # Whenever both replicas hold a request, the second one answers first.
        for replica in (second, first):
            if replica.links and replica.name not in answered:
                replica.link.answer(ok(b"from " + replica.name.encode()))
                answered.append(replica.name)
    assert sorted(answered) == ["a", "b"]
    assert [r.body for r in client.responses()] == [b"from a", b"from b"]
    assert not client.closed


async def test_a_pipelined_request_waits_without_reading_further() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(get("a") + get("b"))
    await rig.settle()
    assert not client.transport.reading  # no third request is read while one waits
    assert rig.replicas["b"].received == b""
    rig.replicas["a"].link.answer(ok(b"1"))
    await rig.settle()
    rig.replicas["b"].link.answer(ok(b"2"))
    assert client.transport.reading
    assert [r.body for r in client.responses()] == [b"1", b"2"]


# -- request smuggling -----------------------------------------------------------------------------

SMUGGLED = b"GET /admin?id=b HTTP/1.1\r\nHost: lb\r\n\r\n"


def post(headers: bytes, body: bytes) -> bytes:
    """A POST to a proxied path with these header lines (each ending in CRLF) and body bytes."""
    return b"POST /x?id=a HTTP/1.1\r\nHost: lb\r\n" + headers + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"
END = b"0\r\n\r\n"
SMUGGLING = {
    "content-length-and-transfer-encoding": post(b"Content-Length: 42\r\n" + CHUNKED, END + SMUGGLED),
    "two-content-lengths": post(b"Content-Length: 0\r\nContent-Length: 38\r\n", SMUGGLED),
    "two-equal-content-lengths": post(b"Content-Length: 0\r\nContent-Length: 0\r\n", SMUGGLED),
    "chunked-not-last": post(b"Transfer-Encoding: chunked, identity\r\n", END + SMUGGLED),
    "unknown-transfer-encoding": post(b"Transfer-Encoding: xchunked\r\n", END + SMUGGLED),
    "space-before-colon": post(b"Transfer-Encoding : chunked\r\n", END + SMUGGLED),
    "bad-chunk-size": post(CHUNKED, b"zz\r\n" + SMUGGLED + b"\r\n" + END),
    "bare-lf-in-chunk": post(CHUNKED, b"5\nhello\r\n" + END),
    "bare-lf-head": b"GET /x?id=a HTTP/1.1\nHost: lb\n\n" + SMUGGLED,
    "bare-lf-header": b"GET /x?id=a HTTP/1.1\r\nHost: lb\nX-A: 1\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("request_", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_request_smuggling_is_refused_with_400_and_close(request_: bytes) -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(request_)
    await rig.settle()
    client.send(SMUGGLED)  # whatever follows is never parsed either
    await rig.settle()
    [answer] = client.responses()
    assert answer.status == 400
    assert json.loads(answer.body) == {
        "message": "<Error> Malformed HTTP request",
        "status": "failure",
    }
    assert answer.headers[b"connection"] == b"close"
    assert client.transport.eof_written or client.transport.closed
    assert {name: r.links for name, r in rig.replicas.items()} == {"a": [], "b": [], "c": []}


async def test_a_bad_chunk_after_the_body_streamed_breaks_the_upstream_request() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(b"POST /x?id=a HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")  # beyond the buffer: it streams to the replica
    await rig.settle()
    link = rig.replicas["a"].link
    assert link.received.startswith(b"POST /x?id=a HTTP/1.1\r\n")
    client.send(b"zz\r\n")
    assert link.transport.aborted  # the replica never sees the rest as a complete request
    [answer] = client.responses()
    assert answer.status == 400
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}
