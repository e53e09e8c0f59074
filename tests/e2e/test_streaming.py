"""Bodies stream through the LB both ways in bounded memory; a broken replica breaks the response, no hang."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest

from tests.conftest import echo_command
from tests.echo_replica import pattern
from tests.lb_support import RunningLB, echo_lb, start_lb, wait_until, worker_pids

MB = 1000 * 1000
MIB = 1024 * 1024
SIZE = 200 * MIB  # the 200 MB body (which the old LB held in memory ~3 times over)
RSS_BOUND = 32 * MB  # the bound on the LB's memory growth while such a body passes


def vm_bytes(pid: int, field: str) -> int:
    """A Vm* line of /proc/<pid>/status (VmRSS: resident now; VmHWM: peak resident), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peaks(lb: RunningLB) -> dict[int, int]:
    """Warm the LB up (pools, imports), then restart each process's peak RSS; its RSS now, by pid."""
    for key in range(20):
        lb.client.get("/big", params={"mib": "1", "id": str(key)})
    before = {}
    for pid in [lb.proc.pid, *worker_pids(lb)]:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0): no sampling gaps
        before[pid] = vm_bytes(pid, "VmRSS")
    return before


def growth(before: dict[int, int]) -> int:
    """How far any LB process's peak RSS rose above its RSS at reset_peaks()."""
    return max(vm_bytes(pid, "VmHWM") - rss for pid, rss in before.items())


@cache
def pattern_sha256(size: int) -> str:
    """The hash of the body the echo replica sends for `size` bytes (computed once, 64 KiB at a time)."""
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def stream_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    with echo_lb(
        tmp_path_factory.mktemp("stream"),
        max_body_bytes=str(2 * SIZE),
        read_timeout="5",
    ) as running:
        yield running


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_download_arrives_whole_with_bounded_memory(stream_lb: RunningLB, chunked: bool) -> None:
    before = reset_peaks(stream_lb)
    digest, received = hashlib.sha256(), 0
    params = {"mib": str(SIZE // MIB), "id": "7", **({"chunked": "1"} if chunked else {})}
    with httpx.stream("GET", f"{stream_lb.url}/big", params=params, timeout=30) as response:
        assert response.status_code == 200
        assert ("content-length" in response.headers) != chunked
        for piece in response.iter_raw():
            received += len(piece)
            digest.update(piece)
    assert received == SIZE
    assert digest.hexdigest() == pattern_sha256(SIZE)
    assert growth(before) < RSS_BOUND, (before, growth(before))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_large_upload_streams_to_the_replica_with_bounded_memory(stream_lb: RunningLB, chunked: bool) -> None:
    before = reset_peaks(stream_lb)
    headers = {} if chunked else {"content-length": str(SIZE)}
    response = httpx.post(
        f"{stream_lb.url}/upload", params={"id": "3"}, content=pattern(SIZE), headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["received"] == SIZE
    assert response.json()["sha256"] == pattern_sha256(SIZE)
    assert growth(before) < RSS_BOUND, (before, growth(before))


def test_chunked_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    lb = start_lb(tmp_path, replicas="1", replica_command=echo_command(), max_body_bytes=str(MIB))
    try:
        response = httpx.post(f"{lb.url}/upload", content=pattern(4 * MIB), timeout=10)
        assert response.status_code == 413
        assert response.json()["message"] == f"<Error> Request body exceeds {MIB} bytes"
        assert lb.client.get("/home").status_code == 200
    finally:
        lb.stop()


def test_a_client_that_stops_reading_does_not_grow_the_lb(stream_lb: RunningLB) -> None:
    before = reset_peaks(stream_lb)
    with socket.create_connection(("127.0.0.1", stream_lb.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /big?mib={SIZE // MIB}&id=9 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        # Read nothing for a while; the LB must pause the replica instead of buffering its bytes.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert stream_lb.client.get("/home", params={"id": "1"}).status_code == 200
        assert growth(before) < RSS_BOUND, (before, growth(before))
        # ...and once it reads again, every byte arrives.
        body = head[head.index(b"\r\n\r\n") + 4 :]
        digest, received = hashlib.sha256(body), len(body)
        for _ in range(SIZE // 4096):  # bounded: 4 KiB per read would be a very slow loopback
            if received >= SIZE:
                break
            data = sock.recv(1024 * 1024)
            assert data, f"closed after {received} bytes"
            received += len(data)
            digest.update(data)
        assert received == SIZE
        assert digest.hexdigest() == pattern_sha256(SIZE)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_replica_dying_mid_body_breaks_the_response(tmp_path: Path, chunked: bool) -> None:
    lb = start_lb(tmp_path, replicas="1", replica_command=echo_command(), read_timeout="30")
    try:
        params = {"mib": "2", **({"chunked": "1"} if chunked else {})}
        # The replica's read timeout (30 s) outlasts the client's (20 s): a hang would be a ReadTimeout.
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            with httpx.stream("GET", f"{lb.url}/die", params=params, timeout=20) as response:
                assert response.status_code == 200
                for _ in response.iter_raw():
                    pass
        wait_until(lambda: lb.client.get("/home").status_code == 200, timeout=30)
    finally:
        lb.stop()


def in_flight(lb: RunningLB) -> float:
    """Proxied requests in flight over all replicas, from /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lb.client.get("/metrics").text.splitlines()
        if line.startswith("chlb_in_flight{")
    )


def test_in_flight_counts_requests_until_they_end(stream_lb: RunningLB) -> None:
    assert in_flight(stream_lb) == 0
    params = {"mib": str(SIZE // MIB), "id": "4"}
    with httpx.stream("GET", f"{stream_lb.url}/big", params=params, timeout=30) as r:
        assert r.status_code == 200
        assert in_flight(stream_lb) == 1  # the response is still streaming
        next(r.iter_raw(65536))
    # The client left mid-body: the LB drops the replica's connection and the count returns to zero.
    wait_until(lambda: in_flight(stream_lb) == 0, timeout=10)
    for key in range(5):
        assert stream_lb.client.get("/big", params={"mib": "1", "id": str(key)}).status_code == 200
    assert in_flight(stream_lb) == 0


def test_a_chunked_body_of_small_chunks_is_not_stalled_by_its_framing(stream_lb: RunningLB) -> None:
    # 620 chunks of 100 bytes: 62,000 bytes of body, but over 64 KiB with the chunk framing. Only then
    # does the rest come; an LB that paused the client while waiting for 64 KiB of body would hang here.
    chunk = b"64\r\n" + b"c" * 100 + b"\r\n"
    with socket.create_connection(("127.0.0.1", stream_lb.port), timeout=10) as sock:
        head = b"POST /upload?id=5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        sock.sendall(head + chunk * 620)
        assert not _answered(sock)
        sock.sendall(chunk * 20 + b"0\r\n\r\n")
        answer = b""
        while b'"received"' not in answer:
            data = sock.recv(65536)
            assert data, answer
            answer += data
    assert b'"received": 64000' in answer


def _answered(sock: socket.socket) -> bool:
    """Whether the LB answered already (it must not: the body is not complete)."""
    sock.settimeout(0.2)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except TimeoutError:
        return False
    finally:
        sock.settimeout(10)
