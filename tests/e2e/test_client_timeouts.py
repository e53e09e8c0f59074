"""The client-side timeouts that outlast the header: a body that stops coming (LB_BODY_TIMEOUT -> 408)
and a client that stops reading our response (LB_SEND_TIMEOUT -> the connection is dropped)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.test_client_side import read_until_closed
from tests.e2e.test_streaming import in_flight
from tests.lb_support import RunningLB, echo_lb, wait_until

BIG_MIB = 64


@pytest.fixture(scope="module")
def timeout_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    with echo_lb(tmp_path_factory.mktemp("timeouts"), body_timeout="1", send_timeout="1") as running:
        yield running


def post_head(length: int) -> bytes:
    return f"POST /echo?id=5 HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()


def test_a_body_that_stops_coming_gets_408_and_a_close(timeout_lb: RunningLB) -> None:
    with socket.create_connection(("127.0.0.1", timeout_lb.port), timeout=20) as sock:
        sock.sendall(post_head(1000) + b"x" * 10)  # 990 bytes promised, never sent
        answer = read_until_closed(sock, limit=10_000)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"Request body timeout" in answer
    assert timeout_lb.client.get("/home", params={"id": "5"}).status_code == 200  # the LB goes on


def test_a_slow_but_steady_body_is_not_cut_off(timeout_lb: RunningLB) -> None:
    # The timeout is between two reads, as nginx's client_body_timeout: 6 pieces 0.4 s apart take
    # 2.4 s in all, over twice the 1 s timeout, and each comes in time.
    pieces = 6
    with socket.create_connection(("127.0.0.1", timeout_lb.port), timeout=20) as sock:
        sock.sendall(post_head(pieces))
        for _ in range(pieces):
            time.sleep(0.4)  # the slow client's pace, not a synchronisation
            sock.sendall(b"y")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_client_that_reads_nothing_is_dropped_after_the_send_timeout(timeout_lb: RunningLB) -> None:
    with socket.create_connection(("127.0.0.1", timeout_lb.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /big?mib={BIG_MIB}&id=6 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: in_flight(timeout_lb) == 1, timeout=10)
        # Reading nothing: the LB's send buffer fills, and after LB_SEND_TIMEOUT it drops the connection
        # (and the replica's): the in-flight count returns to zero while this client still reads nothing.
        wait_until(lambda: in_flight(timeout_lb) == 0, timeout=20)
        received = len(read_until_closed(sock, limit=10_000))
    assert 0 < received < BIG_MIB * 1024 * 1024


def test_a_slow_but_steady_reader_is_not_dropped(timeout_lb: RunningLB) -> None:
    # 64 KiB every 0.25 s: far too slow to empty the LB's buffers (megabytes, most of them in the
    # kernel) within the 1 s send timeout, yet the client takes bytes all the time, so (as with nginx's
    # send_timeout) it keeps its connection.
    with socket.create_connection(("127.0.0.1", timeout_lb.port), timeout=20) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /big?mib={BIG_MIB}&id=7 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda: in_flight(timeout_lb) == 1, timeout=10)
        for _ in range(16):  # 4 s in all: four send timeouts
            assert sock.recv(64 * 1024)
            time.sleep(0.25)  # the slow client's pace, not a synchronisation
        assert in_flight(timeout_lb) == 1  # still streaming to it
