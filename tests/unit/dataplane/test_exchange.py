"""app.dataplane.exchange's rules: retries, 502 never twice, 504, backpressure both ways, the tunnel.

Each test drives a real ClientConnection, ProxyExchange, UpstreamPool and StreamConnection over stand-in
transports (support.py): the test is the client and the replicas, and nothing opens a socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.polling import eventually
from tests.stand_ins import STAND_IN_BACKEND, Client, Link, Replica, Rig, ok

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return STAND_IN_BACKEND


def get(key: str) -> bytes:
    return b"GET /home?id=%b HTTP/1.1\r\nHost: lb\r\n\r\n" % key.encode()


def post(key: str, body: bytes = b'{"vote": 1}') -> bytes:
    return b"POST /vote?id=%b HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n%b" % (
        key.encode(),
        len(body),
        body,
    )


def message(body: bytes) -> str:
    parsed = json.loads(body)
    assert parsed["status"] == "failure"
    return str(parsed["message"])


def times_seen(replica: Replica, request_line: bytes) -> int:
    return replica.received.count(request_line)


# -- retries ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [get("a"), post("a")], ids=["GET", "POST"])
async def test_a_refused_connect_goes_to_the_next_replica_and_is_reported(request_: bytes) -> None:
    rig = Rig()
    rig.replicas["a"].accepting = False
    client = rig.open_client()
    client.send(request_)
    await rig.settle()
    assert rig.replicas["a"].refused == 1
    rig.replicas["b"].link.answer(ok(b"from b"))
    [answer] = client.responses()
    assert (answer.status, answer.body) == (200, b"from b")
    assert rig.routing.reported == [("a", "connection refused")]
    assert rig.replicas["c"].links == []
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}


async def test_every_replica_refusing_gives_503_after_max_tries() -> None:
    rig = Rig(("a", "b", "c", "d"), max_tries=3)
    for replica in rig.replicas.values():
        replica.accepting = False
    client = rig.open_client()
    client.send(get("a"))
    await rig.settle()
    [answer] = client.responses()
    assert answer.status == 503
    assert message(answer.body) == "<Error> No replica could answer the request"
    assert [name for name, _ in rig.routing.reported] == ["a", "b", "c"]
    assert rig.replicas["d"].refused == 0


async def test_a_get_reset_mid_request_goes_to_the_next_replica_unreported() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(get("a"))
    await rig.settle()
    rig.replicas["a"].link.hang_up()  # read the request, closed without a byte of answer
    await rig.settle()
    rig.replicas["b"].link.answer(ok(b"from b"))
    assert [(r.status, r.body) for r in client.responses()] == [(200, b"from b")]
    assert rig.routing.reported == []  # one bad request is no reason to take a replica off


async def kept_alive_get(rig: Rig) -> tuple[Replica, Client]:
    """A client whose GET replica a answered: that connection to a is now idle in the pool."""
    a = rig.replicas["a"]
    client = rig.open_client()
    client.send(get("a"))
    await rig.settle()
    a.link.answer(ok(b"first"))
    return a, client


async def test_a_get_on_a_stale_idle_connection_is_sent_again_to_the_same_replica() -> None:
    rig = Rig()
    a, client = await kept_alive_get(rig)
    client.send(get("a"))
    await rig.settle()
    assert len(a.links) == 1 and times_seen(a, b"GET /home?id=a") == 2  # reused
    a.link.hang_up()  # the replica had closed it while idle
    await rig.settle()
    assert len(a.links) == 2  # once more, on a new connection to the same replica
    a.link.answer(ok(b"second"))
    assert [r.body for r in client.responses()] == [b"first", b"second"]
    assert rig.replicas["b"].links == []
    assert rig.plane.stats.replica("a").errors == 0


# -- a request that must not be sent twice ----------------------------------------------------------


async def test_a_post_reset_mid_request_gets_502_and_no_second_replica() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(post("a"))
    await rig.settle()
    a = rig.replicas["a"]
    assert times_seen(a, b"POST /vote?id=a") == 1
    a.link.hang_up()  # it read the request and closed without answering: it may have applied it
    await rig.settle()
    [answer] = client.responses()
    assert answer.status == 502
    assert message(answer.body) == "<Error> Replica 'a' closed the connection mid-request"
    assert times_seen(a, b"POST") == 1
    assert (rig.replicas["b"].links, rig.replicas["c"].links) == ([], [])
    assert rig.routing.reported == []
    assert not client.closed  # the client's connection is fine: only this request failed
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}


async def post_after_a_kept_alive_get(rig: Rig) -> tuple[Replica, Client]:
    """A GET answered by replica a (its connection now idle), then a POST for a, sent."""
    a, client = await kept_alive_get(rig)
    client.send(post("a"))
    await rig.settle()
    return a, client


async def test_a_post_after_a_kept_alive_get_reset_mid_request_gets_502_while_the_replica_accepts() -> None:
    # The replica holds an idle connection from an earlier GET and still accepts new ones. The POST
    # (on that reused connection, or on a new one) is read and the connection closed without an answer:
    # the replica may have applied it, so it is neither repeated there nor sent elsewhere.
    rig = Rig()
    a, client = await post_after_a_kept_alive_get(rig)
    [carrier] = [link for link in a.links if b"POST /vote" in link.received]
    carrier.hang_up()
    await rig.settle()
    assert [r.status for r in client.responses()] == [200, 502]
    assert times_seen(a, b"POST /vote?id=a") == 1
    assert (rig.replicas["b"].links, rig.replicas["c"].links) == ([], [])
    assert rig.routing.reported == []


async def test_a_post_goes_on_a_new_connection_never_an_idle_one() -> None:
    # On a reused connection, "closed while idle" and "read it and died" look alike (retry.may_reuse).
    rig = Rig()
    a, client = await post_after_a_kept_alive_get(rig)
    first, second = a.links
    assert b"POST" not in first.received and second.received.startswith(b"POST /vote?id=a")
    second.answer(ok(b"voted"))
    client.send(get("a"))
    assert len(a.links) == 2  # a GET still takes an idle one


async def test_a_post_to_a_replica_that_is_gone_goes_to_the_next_one() -> None:
    # Nothing of it reached the gone replica (its idle connection died, new ones are refused).
    rig = Rig()
    a, client = await kept_alive_get(rig)
    a.accepting = False
    client.send(post("a"))
    await rig.settle()
    for link in a.links:
        if b"POST" in link.received:
            link.hang_up()
    await rig.settle()
    rig.replicas["b"].link.answer(ok(b"from b"))
    assert [(r.status, r.body) for r in client.responses()] == [(200, b"first"), (200, b"from b")]
    assert rig.routing.reported == [("a", "connection refused")]
    assert times_seen(rig.replicas["b"], b"POST /vote?id=a") == 1


# -- timeouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [get("a"), post("a")], ids=["GET", "POST"])
async def test_an_upstream_timeout_gets_504_and_no_retry(request_: bytes) -> None:
    rig = Rig(read_timeout=0.02)
    client = rig.open_client()
    client.send(request_)
    await rig.settle()
    assert rig.replicas["a"].received.startswith(request_[:20])
    [answer] = await eventually(client.responses, timeout=2)
    assert answer.status == 504
    assert message(answer.body) == "<Error> Replica 'a' did not answer in time"
    assert rig.replicas["a"].link.transport.aborted  # a late answer can never be mistaken for the next
    assert (rig.replicas["b"].links, rig.replicas["c"].links) == ([], [])
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}


# -- backpressure ----------------------------------------------------------------------------------


def assert_pauses(pause: Callable[[], None], resume: Callable[[], None], reading: Callable[[], bool]) -> None:
    """`pause` (one side's buffer is full) stops reading the other side; `resume` starts it again."""
    assert reading()
    pause()
    assert not reading()
    resume()
    assert reading()


async def test_a_slow_client_pauses_the_replica_and_resumes_it() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(get("a"))
    await rig.settle()
    link = rig.replicas["a"].link
    link.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
    assert_pauses(client.conn.pause_writing, client.conn.resume_writing, lambda: link.transport.reading)
    link.answer(b"x" * 999_000)
    [answer] = client.responses()
    assert len(answer.body) == 1_000_000


async def test_a_client_already_slow_pauses_the_replica_as_soon_as_it_is_bound() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(get("a"))
    client.conn.pause_writing()
    await rig.settle()
    assert not rig.replicas["a"].link.transport.reading


async def test_a_slow_replica_pauses_the_client_and_resumes_it() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(b"POST /upload?id=a HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000\r\n\r\n")
    client.send(b"y" * 100_000)  # beyond the buffered size: the body streams to the replica
    await rig.settle()
    link = rig.replicas["a"].link
    assert_pauses(link.conn.pause_writing, link.conn.resume_writing, lambda: client.transport.reading)
    client.send(b"y" * 900_000)
    assert link.received.endswith(b"y" * 1000) and link.received.count(b"y") == 1_000_000


# -- the tunnel ------------------------------------------------------------------------------------

UPGRADE = b"GET /ws?id=a HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


async def test_an_upgrade_answered_101_passes_bytes_both_ways() -> None:
    rig = Rig()
    client = rig.open_client()
    client.send(UPGRADE + b"early")  # bytes after the head belong to the tunnel
    await rig.settle()
    link = rig.replicas["a"].link
    assert link.received.startswith(b"GET /ws?id=a HTTP/1.1\r\n")
    assert b"upgrade: websocket\r\n" in link.received and b"early" not in link.received
    link.answer(SWITCHED + b"hello")
    assert client.transport.data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert client.transport.data.endswith(b"\r\n\r\nhello")
    assert link.received.endswith(b"\r\n\r\nearly")
    assert client.transport.reading
    client.send(b"ping")
    assert link.received.endswith(b"earlyping")
    link.answer(b"pong")
    assert client.transport.data.endswith(b"hellopong")
    client.conn.eof_received()  # the client half-closes: so does the replica's side
    assert link.transport.eof_written and not link.transport.is_closing()
    link.answer(b"last words")
    assert client.transport.data.endswith(b"last words")


async def tunnel_to_a(rig: Rig) -> tuple[Client, Link]:
    """A client whose Upgrade request replica a accepted: a tunnel, open both ways."""
    client = rig.open_client()
    client.send(UPGRADE)
    await rig.settle()
    link = rig.replicas["a"].link
    link.answer(SWITCHED)
    return client, link


async def test_the_replica_closing_a_tunnel_closes_the_client() -> None:
    rig = Rig()
    client, link = await tunnel_to_a(rig)
    assert not client.closed
    link.hang_up()
    assert client.transport.closed
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}


async def test_the_client_closing_a_tunnel_closes_the_replica() -> None:
    rig = Rig()
    client, link = await tunnel_to_a(rig)
    assert not link.transport.is_closing()
    client.conn.connection_lost(None)
    assert link.transport.is_closing()
    assert rig.in_flight() == {"a": 0, "b": 0, "c": 0}
    assert rig.replicas["a"].pool.idle_count == 0  # a tunnel's connection is never reused


async def test_a_101_to_a_request_that_asked_for_no_upgrade_never_makes_a_tunnel() -> None:
    # RFC 9110 §15.2.2: a server switches only to a protocol the client listed in Upgrade. Passing an
    # unasked 101 on would turn the client's connection into raw bytes to this replica: its next
    # requests would skip the LB's parser, limits and routing.
    rig = Rig()
    client = rig.open_client()
    client.send(get("a"))
    await rig.settle()
    rig.replicas["a"].link.answer(SWITCHED)
    await rig.settle()
    client.send(get("b"))
    await rig.settle()
    assert not client.transport.data.startswith(b"HTTP/1.1 101")
    assert b"GET /home?id=b" not in rig.replicas["a"].received
