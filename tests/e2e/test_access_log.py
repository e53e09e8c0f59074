"""LB_ACCESS_LOG=true: one logfmt line per request, proxied or the LB's own; none when it is off."""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import httpx

from tests.lb_support import RunningLB, echo_lb, fresh_get, wait_until

LINE = re.compile(r"app\.dataplane\.access_log: (client=\S+ method=\S+ target=\S+ status=\S+.*)$", re.M)


def access_lines(lb: RunningLB) -> list[dict[str, str]]:
    """The access-log lines so far, as {key: value} (quotes of logfmt values removed)."""
    rows = []
    for line in LINE.findall(lb.log()):
        rows.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)})
    return rows


def test_every_request_gets_one_line_with_status_replica_and_time(tmp_path: Path) -> None:
    with echo_lb(tmp_path, access_log=True) as lb:
        with httpx.Client(base_url=lb.url, timeout=10) as client:
            served = client.get("/home", params={"id": "7"})
            missing = client.get("/no-such-page", params={"id": "7"})
            own = client.get("/rep")
        assert (served.status_code, missing.status_code, own.status_code) == (200, 400, 200)
        replica = served.json()["message"].removeprefix("Hello from Server: ")

        def logged() -> list[dict[str, str]]:
            targets = ("/home?id=7", "/no-such-page?id=7", "/rep")
            rows = [r for r in access_lines(lb) if r["target"] in targets]
            return rows if len(rows) >= 3 else []

        rows = wait_until(logged, timeout=10)
        by_target = {r["target"]: r for r in rows}
        assert by_target["/home?id=7"]["status"] == "200"
        assert by_target["/home?id=7"]["replica"] == replica
        assert by_target["/no-such-page?id=7"]["status"] == "400"  # what the client got, not the 404
        assert by_target["/rep"]["status"] == "200"
        assert "replica" not in by_target["/rep"]  # the LB answered itself
        assert all(r["method"] == "GET" and r["client"] == "127.0.0.1" for r in rows)
        assert all(float(r["ms"]) >= 0 for r in rows)


def test_no_line_when_the_access_log_is_off(tmp_path: Path) -> None:
    with echo_lb(tmp_path) as lb:
        for _ in range(5):
            assert httpx.get(f"{lb.url}/home", params={"id": "7"}, timeout=10).status_code == 200
        # The LB logs INFO lines (start-up, replicas): the access log alone is missing.
        assert "replica" in lb.log()
        assert access_lines(lb) == []


def lines_for(lb: RunningLB, target: str, count: int) -> list[dict[str, str]]:
    """The access-log lines of `target`, once at least `count` of them are written."""

    def enough() -> list[dict[str, str]]:
        rows = [r for r in access_lines(lb) if r["target"] == target]
        return rows if len(rows) >= count else []

    return wait_until(enough, timeout=10)


def test_through_a_worker_the_lbs_own_paths_get_one_line_each(tmp_path: Path) -> None:
    # A worker forwards /rep to the owner's private port: the worker logs it, the owner must not again.
    requests = 12
    with echo_lb(tmp_path, access_log=True, workers="2") as lb:
        before = len([r for r in access_lines(lb) if r["target"] == "/rep"])  # start_lb's own polls
        for _ in range(requests):
            assert fresh_get(lb, "/rep").status_code == 200
        rows = lines_for(lb, "/rep", before + requests)
        assert len(rows) == before + requests  # the owner's line would come first: none was written
        assert all("replica" not in r and r["client"] == "127.0.0.1" for r in rows)


def test_cut_off_requests_are_logged_too(tmp_path: Path) -> None:
    with echo_lb(tmp_path, access_log=True, body_timeout="1") as lb:
        # A body that stops coming: the client got a 408.
        with socket.create_connection(("127.0.0.1", lb.port), timeout=20) as sock:
            sock.sendall(b"POST /echo?id=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nxx")
            assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        (timed_out,) = lines_for(lb, "/echo?id=3", 1)
        assert timed_out["status"] == "408"
        # A client that leaves before its answer (nginx logs these as 499).
        with socket.create_connection(("127.0.0.1", lb.port), timeout=20) as sock:
            sock.sendall(b"GET /slow?secs=5&id=4 HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_until(lambda: sum(r["in_flight"] for r in lb.status().values()) == 1, timeout=10)
            # Closed with a reset (a half-close would still get its answer: HTTP/1.1 allows it).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        (left,) = lines_for(lb, "/slow?secs=5&id=4", 1)
        assert left["outcome"] == "client_closed"
        assert left["status"] == "-"
