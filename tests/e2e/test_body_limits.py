"""Every path has a body limit: 413 in the contract's shape, answered before the rest of the body is read."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.lb_support import LBFactory, RunningLB

CONTROL_LIMIT = 64 * 1024  # LB_MAX_CONTROL_BODY_BYTES' default
DECLARED = 50_000_000  # a body the client announces and never sends: the LB must not wait for it


@pytest.fixture(scope="module")
def small_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    """One replica; proxied bodies limited to 1,000 bytes, control bodies left at their default."""
    factory = LBFactory(tmp_path_factory.mktemp("limits"))
    yield factory(replicas="1", max_body_bytes="1000")
    factory.close()


def exchange(port: int, head: str, chunks: list[bytes] | None = None) -> tuple[int, dict[str, object]]:
    """Send a request head and some body bytes on a raw socket; return the status and JSON body of the answer.

    The body is never finished, so an LB that waited for all of it would time out here instead of answering.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        for chunk in chunks or []:
            sock.sendall(chunk)
        data = b""
        while b"\r\n\r\n" not in data:
            data += _recv(sock)
        header_block, body = data.split(b"\r\n\r\n", 1)
        lines = header_block.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers["content-length"]):
            body += _recv(sock)
    return int(lines[0].split()[1]), json.loads(body)


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(65536)
    assert data, "the LB closed the connection without an answer"
    return data


def chunked(size: int, count: int) -> list[bytes]:
    """`count` chunks of `size` bytes in chunked transfer encoding, without the final zero chunk."""
    return [f"{size:x}\r\n".encode() + b"a" * size + b"\r\n" for _ in range(count)]


CONTROL_REQUESTS = [("POST", "/add"), ("DELETE", "/rm"), ("POST", "/api/vote"), ("POST", "/static/vote.css")]


@pytest.mark.parametrize(("method", "path"), CONTROL_REQUESTS)
def test_declared_control_body_over_the_limit_is_refused_at_once(
    small_lb: RunningLB, method: str, path: str
) -> None:
    head = f"{method} {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\n"
    status, body = exchange(small_lb.port, head + f"Content-Length: {DECLARED}\r\n\r\n", [b"{"])
    assert status == 413
    assert body == {"message": f"<Error> Request body exceeds {CONTROL_LIMIT} bytes", "status": "failure"}


@pytest.mark.parametrize(("method", "path"), CONTROL_REQUESTS)
def test_chunked_control_body_is_cut_off_at_the_limit(small_lb: RunningLB, method: str, path: str) -> None:
    head = f"{method} {path} HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n"
    status, body = exchange(small_lb.port, head, chunked(16 * 1024, 5))  # 80 KiB, and no end
    assert status == 413
    assert body["message"] == f"<Error> Request body exceeds {CONTROL_LIMIT} bytes"


def test_proxied_bodies_have_their_own_limit(small_lb: RunningLB) -> None:
    head = "POST /home?id=1 HTTP/1.1\r\nHost: lb\r\n"
    status, body = exchange(small_lb.port, head + f"Content-Length: {DECLARED}\r\n\r\n")
    assert (status, body["message"]) == (413, "<Error> Request body exceeds 1000 bytes")
    status, body = exchange(small_lb.port, head + "Transfer-Encoding: chunked\r\n\r\n", chunked(600, 2))
    assert (status, body["message"]) == (413, "<Error> Request body exceeds 1000 bytes")


def test_bodies_under_the_limit_still_work(small_lb: RunningLB) -> None:
    vote = small_lb.client.post("/api/vote", json={"option": "docker"}, headers={"X-Voter-Id": "limits"})
    assert vote.status_code == 200, vote.text
    chunked_vote = small_lb.client.post(
        "/api/vote",
        content=iter([b'{"option": ', b'"helm"}']),  # an iterator: httpx sends it chunked
        headers={"X-Voter-Id": "limits", "Content-Type": "application/json"},
    )
    assert chunked_vote.json()["votes"]["helm"] == 1, chunked_vote.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/add", {"n": 1, "hostnames": ["a" * 60_000]}),
        ("DELETE", "/rm", {"n": 1, "hostnames": ["a" * 60_000]}),
        ("POST", "/api/vote", {"option": "a" * 60_000}),
        ("POST", "/add", {"n": 1, "a" * 60_000: 1}),
    ],
)
def test_errors_quote_user_input_cut_short(
    small_lb: RunningLB, method: str, path: str, body: dict[str, object]
) -> None:
    answer = small_lb.client.request(method, path, json=body, headers={"X-Voter-Id": "limits"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["status"] == "failure"
    assert len(answer.content) < 500, answer.text[:1000]


@pytest.mark.parametrize("path", ["/home", "/add"])
def test_a_client_that_sends_50_mb_before_reading_still_gets_the_413(small_lb: RunningLB, path: str) -> None:
    """urllib writes the whole body before it reads: the LB reads and discards it (lingering close) so the
    413 is not destroyed by a reset, which the client would see as "Broken pipe"."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{small_lb.port}{path}", data=b"x" * 50_000_000, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 413
    assert json.loads(answer.value.read())["status"] == "failure"
