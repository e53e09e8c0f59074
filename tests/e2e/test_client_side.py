"""The client side of the LB: limits (slow headers, idle keep-alive, header size, connection cap),
pipelining in order, and request smuggling refused (RFC 9112 §6.3, §11.2). Raw sockets on loopback."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.lb_support import RunningLB, echo_lb, start_lb, wait_until

SLOW_CLIENTS = 800  # the flood; LB_MAX_CONNECTIONS's default (4096) leaves room for it
HEADER_TIMEOUT = 3.0  # LB_HEADER_TIMEOUT of the module's LB: short, so the flood is over quickly
TRICKLE_EVERY = 1.0  # each slow client sends a header line this often: "every few seconds", scaled down
CUT_SLACK = 4.0  # on top of the header timeout: generous, 2 shared cores
BASELINE_GETS = 300
P99_RATIO, P99_FLOOR = 3.0, 0.02  # "unaffected": p99 during <= 3x p99 before + 20 ms (~1.5 ms here)
FD_NEED = 2 * SLOW_CLIENTS + 500  # the flood's sockets on our side, or on the LB's (which inherits our limit)


def ensure_fd_limit(need: int) -> None:
    """Raise our open-file limit to `need` if the hard limit allows (LBs started afterwards inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        assert hard == resource.RLIM_INFINITY or hard >= need, f"ulimit -Hn {hard} < {need} needed"
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


@pytest.fixture(scope="module")
def edge_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    ensure_fd_limit(FD_NEED)
    with echo_lb(
        tmp_path_factory.mktemp("edge"),
        header_timeout=str(HEADER_TIMEOUT),
        keep_alive_timeout="1",
        max_header_bytes="4096",
    ) as running:
        yield running


def connect(lb: RunningLB) -> socket.socket:
    return socket.create_connection(("127.0.0.1", lb.port), timeout=10)


def read_until_closed(sock: socket.socket, limit: int = 1000) -> bytes:
    """Everything the LB sends until it closes (bounded)."""
    chunks = []
    for _ in range(limit):
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class Reader:
    """Reads HTTP/1.1 responses (Content-Length or chunked) off one socket, bounded in reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.reads = 0

    def fill(self, size: int) -> None:
        while len(self.buffer) < size:
            self.more()

    def more(self) -> None:
        self.reads += 1
        assert self.reads < 10_000, "too many reads"
        data = self.sock.recv(65536)
        assert data, "closed early"
        self.buffer += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self.more()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def take(self, size: int) -> bytes:
        self.fill(size)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status = int(self.line().split()[1])
        headers: dict[str, str] = {}
        while line := self.line():
            name, value = line.decode("latin-1").split(":", 1)
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self.line().split(b";")[0], 16):
                body += self.take(size)
                self.take(2)
            self.take(2)
            return status, headers, body
        return status, headers, self.take(int(headers.get("content-length", "0")))


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` responses from one connection, in the order they came."""
    reader = Reader(sock)
    return [reader.response() for _ in range(count)]


# -- limits ------------------------------------------------------------------------------------------


def timed_get(lb: RunningLB, key: int) -> float:
    """Seconds for one GET on a new connection (a normal client arriving), which must be answered 200."""
    started = time.perf_counter()
    with connect(lb) as sock:
        sock.sendall(b"GET /home?id=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % key)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    return time.perf_counter() - started


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


class SlowClients:
    """Clients that send half a header, then a line now and then; records when and how each is cut off."""

    def __init__(self, lb: RunningLB, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.opened: dict[socket.socket, float] = {}
        self.cut: dict[socket.socket, float] = {}
        self.answers: list[bytes] = []
        self.lines = 0
        for _ in range(count):
            sock = connect(lb)
            sock.sendall(b"GET /home?id=slow HTTP/1.1\r\nHost: x\r\n")
            self.opened[sock] = time.monotonic()
            self.selector.register(sock, selectors.EVENT_READ)

    @property
    def connected(self) -> list[socket.socket]:
        return [sock for sock in self.opened if sock not in self.cut]

    def trickle(self) -> None:
        """One more header line from every client still connected: it must not extend the deadline."""
        self.lines += 1
        for sock in self.connected:
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % self.lines)
            except OSError:
                pass  # the LB closed it: poll() records it

    def poll(self) -> None:
        """Record every client the LB has answered or closed since the last call."""
        for key, _ in self.selector.select(timeout=0):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            self.cut[sock] = time.monotonic()
            self.answers.append(read_until_closed(sock))
            self.selector.unregister(sock)

    def close(self) -> None:
        self.selector.close()
        for sock in self.opened:
            sock.close()


def test_slow_header_clients_are_cut_off_while_others_are_served(edge_lb: RunningLB) -> None:
    for key in range(20):
        timed_get(edge_lb, key)  # warm-up
    before = [timed_get(edge_lb, key) for key in range(BASELINE_GETS)]
    slow = SlowClients(edge_lb, SLOW_CLIENTS)
    try:
        during: list[float] = []
        deadline = max(slow.opened.values()) + HEADER_TIMEOUT + CUT_SLACK
        next_line = time.monotonic() + TRICKLE_EVERY
        for key in range(20_000):  # ~1 ms per round: the deadline ends it first
            slow.poll()
            if not slow.connected or time.monotonic() > deadline:
                break
            if time.monotonic() >= next_line:
                slow.trickle()
                next_line += TRICKLE_EVERY
            during.append(timed_get(edge_lb, key))
        still = len(slow.connected)
        assert still == 0, f"{still} of {SLOW_CLIENTS} slow clients still connected after {slow.lines} lines"
        bad = [answer[:100] for answer in slow.answers if answer and not answer.startswith(b"HTTP/1.1 408")]
        assert not bad, bad[:3]
        held = [slow.cut[sock] - opened for sock, opened in slow.opened.items()]
        # Cut by the header timeout: not before half of it (they were within limits), not long after it.
        assert HEADER_TIMEOUT / 2 < min(held), min(held)
        assert max(held) < HEADER_TIMEOUT + CUT_SLACK, max(held)
        assert slow.lines >= 2  # the lines came, and did not keep anyone connected
    finally:
        slow.close()
    assert len(during) >= 100, len(during)
    assert p99(during) <= P99_RATIO * p99(before) + P99_FLOOR, (p99(before), p99(during), len(during))


def test_idle_keep_alive_connections_are_closed(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(b"GET /home?id=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        ((status, _, _),) = read_responses(sock, 1)
        assert status == 200
        assert read_until_closed(sock) == b""  # the LB closes it after keep_alive_timeout


def test_too_large_header_is_431_and_closed(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 431")
    with connect(edge_lb) as sock:  # one endless header line, sent in pieces
        sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(100):
                sock.sendall(b"a" * 4096)
        except OSError:
            pass  # the LB closed on us: the point
        answer = read_until_closed(sock)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431")


def test_connections_beyond_the_cap_are_refused_at_once(tmp_path: Any) -> None:
    lb = start_lb(tmp_path, replicas="1", max_connections="4", header_timeout="30")
    held = [connect(lb) for _ in range(4)]
    try:
        wait_until(lambda: _refused(lb), timeout=10)
        with connect(lb) as extra:
            answer = read_until_closed(extra)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"Too many connections" in answer
        held.pop().close()
        wait_until(lambda: _served(lb), timeout=10)
    finally:
        for sock in held:
            sock.close()
        lb.stop()


def _refused(lb: RunningLB) -> bool:
    with connect(lb) as sock:
        return read_until_closed(sock).startswith(b"HTTP/1.1 503")


def _served(lb: RunningLB) -> bool:
    with connect(lb) as sock:
        sock.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_until_closed(sock).startswith(b"HTTP/1.1 200")


# -- pipelining ----------------------------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(
            b"GET /slow?secs=0.3&id=1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /echo/second?id=2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /rep HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo/fourth?id=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        )
        (s1, _, b1), (s2, _, b2), (s3, _, b3), (s4, _, b4) = read_responses(sock, 4)
    assert (s1, b1) == (200, b"late")
    assert s2 == 200 and json.loads(b2)["path"] == "/echo/second"
    assert s3 == 200 and json.loads(b3)["message"]["N"] == 2
    assert s4 == 200 and json.loads(b4)["path"] == "/echo/fourth" and json.loads(b4)["body"] == "hi"


# -- smuggling ---------------------------------------------------------------------------------------

SMUGGLED = b"GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /echo/a HTTP/1.1\r\nHost: x\r\n"
SMUGGLING = {
    "cl-and-te": POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-cl": POST + b"Content-Length: 0\r\nContent-Length: 41\r\n\r\n" + SMUGGLED,
    "obfuscated-te": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-list": POST + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-space-before-colon": POST + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "bad-chunk-size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + SMUGGLED,
    "bare-lf": b"GET /echo/a HTTP/1.1\nHost: x\n\n" + SMUGGLED,
    "bare-lf-in-chunk": POST + b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("payload", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_request_smuggling_is_refused_with_400_and_close(edge_lb: RunningLB, payload: bytes) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(payload)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # one answer: nothing was forwarded as a second request
    assert b"smuggled" not in answer


def test_lb_keeps_serving_after_the_limits_bite(edge_lb: RunningLB) -> None:
    assert edge_lb.client.get("/home", params={"id": "5"}).status_code == 200
    assert edge_lb.proc.poll() is None


# -- framing corners -------------------------------------------------------------------------------


def test_http_1_0_client_gets_a_close_delimited_or_sized_answer(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(b"GET /chunked?id=1 HTTP/1.0\r\n\r\n")
        answer = read_until_closed(sock)  # the LB closes: the end of an HTTP/1.0 body
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert body == b"one,two,three"


def test_expect_100_continue_is_answered_by_the_lb(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        head = b"POST /echo/e?id=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        assert reader.line() == b"HTTP/1.1 100 Continue" and reader.line() == b""
        sock.sendall(b"hello")
        status, _, body = reader.response()
    echo = json.loads(body)
    assert status == 200 and echo["body"] == "hello"
    assert "expect" not in {name for name, _ in echo["headers"]}


def test_a_body_answered_early_is_skipped_and_the_connection_goes_on(edge_lb: RunningLB) -> None:
    with connect(edge_lb) as sock:
        sock.sendall(b"POST /nowhere?id=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
        sock.sendall(b"x" * 200_000 + b"GET /echo/after?id=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        (s1, _, b1), (s2, _, b2) = read_responses(sock, 2)
    assert s1 == 400 and b"'/nowhere' endpoint does not exist" in b1
    assert s2 == 200 and json.loads(b2)["path"] == "/echo/after"


def test_a_header_with_an_underscore_does_not_reach_the_replica(edge_lb: RunningLB) -> None:
    """Dropped as nginx does: a framework that reads `_` as `-` would frame `Transfer_Encoding` as chunked."""
    head = (
        b"POST /echo/underscore?id=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Transfer_Encoding: chunked\r\nX_Api_Key: k\r\nX-Kept: yes\r\nConnection: close\r\n\r\nhi"
    )
    with connect(edge_lb) as sock:
        sock.sendall(head)
        ((status, _, body),) = read_responses(sock, 1)
    assert status == 200
    seen = json.loads(body)
    names = [name for name, _ in seen["headers"]]
    assert "x-kept" in names and seen["body"] == "hi"
    assert not [name for name in names if "_" in name], names
    assert wait_until(lambda: "'Transfer_Encoding'" in edge_lb.log(), timeout=10)
    assert "'X_Api_Key'" not in edge_lb.log()  # one line per connection
