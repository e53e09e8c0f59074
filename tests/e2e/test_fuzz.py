"""Bounded fuzzing of the LB's front door: odd but valid requests get answers below 500, malformed ones are
refused, and the LB keeps serving. Traffic goes to loopback only; every loop is bounded in count."""

from __future__ import annotations

import random
import socket
import string

import httpx
import pytest

from tests.lb_support import LBFactory

ODD_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/ "
MALFORMED = [
    b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /home HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\n\r\n",
    b"GET /home HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET /home HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    bytes(range(256)) * 4,
]


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return b""  # the LB closed on us mid-send: a refusal
        chunks: list[bytes] = []
        while len(chunks) < 1000:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_odd_valid_requests_never_get_a_5xx(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    rng = random.Random(7)
    with httpx.Client(base_url=lb.url, timeout=10) as client:
        for _ in range(300):
            path = "/" + "".join(rng.choice(ODD_CHARS) for _ in range(rng.randint(0, 40)))
            params = {"".join(rng.choices(ODD_CHARS, k=3)): "".join(rng.choices(ODD_CHARS, k=8))}
            if rng.random() < 0.5:
                params["id"] = "".join(rng.choices(ODD_CHARS, k=rng.randint(0, 12)))
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))) if method != "GET" else None
            headers = {"X-Fuzz": "".join(rng.choices(string.printable.strip(), k=20))}
            response = client.request(method, path, params=params, content=body, headers=headers)
            assert response.status_code < 500, (method, path, params, response.status_code, response.text)
        assert client.get("/home", params={"id": "1"}).status_code == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_malformed_http_is_refused_and_the_lb_keeps_serving(lb_factory: LBFactory, workers: str) -> None:
    lb = lb_factory(replicas="1", workers=workers)
    for payload in MALFORMED:
        answer = raw_exchange(lb.port, payload)
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, (payload[:60], answer[:200])
        assert lb.client.get("/home", params={"id": "1"}).status_code == 200
    assert lb.proc.poll() is None
