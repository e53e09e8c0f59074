"""The data plane's own Python per proxied request, without sockets: where `make bench` cannot look.

A real ClientConnection and StreamConnection (app/dataplane) are driven in-process with stand-in transports
that accept writes and do nothing else: each round feeds a client request (`GET /home?id=<n>`) and the
replica's answer (nginx's headers, the contract's JSON), exactly as uvloop would. No system call, no event
loop turn, so the figure is steady even on a busy machine (CPU time, best of several passes) and shows the
cost of each change to the hot path. The reference row is httptools parsing the same two messages with
callbacks that do nothing: the floor any Python proxy on these parsers pays.

When the hot path runs compiled (app/native.py), the same round also runs on its Python source in a fresh
interpreter with LB_COMPILED=false, for the ratio.

`python -m bench.dataplane_bench [--requests N] [--passes P] [--out bench/out/dataplane.md]`
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httptools
import uvloop

from app import native
from app.control.routing import RoutingTable
from app.dataplane.exchange import DataPlane
from app.dataplane.front import Front, FrontLimits
from app.dataplane.keys import make_key_extractor
from app.dataplane.server import ClientConnection
from app.ring.registry import make_strategy
from app.upstream.connection import StreamConnection
from app.upstream.pool import UpstreamPool
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"message": "Hello from Server: Server 1", "status": "successful"}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 05:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n%b"
    % (len(BODY), BODY)
)
KEYS = 1000


def request(n: int) -> bytes:
    return b"GET /home?id=%d HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n" % (100_000 + n % KEYS)


class StandInTransport:
    """Takes writes and reports an empty buffer: the socket's side of a transport, minus the socket."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name in ("peername", "sockname") else default


class Routing:
    """A fixed routing table of three replicas, each with one idle streaming connection."""

    def __init__(self, loop: uvloop.Loop) -> None:
        names = ["Server 1", "Server 2", "Server 3"]
        pools = {name: UpstreamPool("127.0.0.1", 9000 + i) for i, name in enumerate(names)}
        for pool in pools.values():
            conn = StreamConnection(pool, loop)
            conn.connection_made(cast(Any, StandInTransport()))
            pool.release(conn)
        self.table = RoutingTable(make_strategy("rendezvous", 100).build(names), pools)

    def report_failure(self, name: str, reason: str) -> None:
        raise AssertionError(f"{name} failed: {reason}")


def proxy_round(loop: uvloop.Loop) -> tuple[Callable[[int], None], StandInTransport]:
    """One client connection through the real data plane; returns a round (request + answer)."""
    plane = DataPlane(Routing(loop), make_key_extractor("query", "id"))
    limits = FrontLimits(
        header_timeout=10.0,
        keep_alive_timeout=5.0,
        body_timeout=60.0,
        send_timeout=60.0,
        max_header_bytes=16384,
        max_connections=100,
        max_body_bytes=10 << 20,
        max_control_body_bytes=65536,
    )
    front = Front(limits, lambda path: False)
    front.data_plane = plane
    state = SimpleNamespace(connections=set(), total_requests=0)
    client = ClientConnection(cast(Any, None), cast(Any, state), {}, loop, front=front)
    transport = StandInTransport()
    client.connection_made(cast(Any, transport))
    requests = [request(n) for n in range(KEYS)]

    def one(n: int) -> None:
        client.data_received(requests[n % KEYS])
        exchange = cast(Any, client)._active
        exchange._conn.data_received(RESPONSE)

    return one, transport


def parsers_round() -> Callable[[int], None]:
    """The same two messages through httptools with callbacks that do nothing."""

    class Nothing:
        def on_url(self, url: bytes) -> None: ...
        def on_header(self, name: bytes, value: bytes) -> None: ...
        def on_headers_complete(self) -> None: ...
        def on_body(self, body: bytes) -> None: ...
        def on_message_complete(self) -> None: ...

    request_parser = httptools.HttpRequestParser(Nothing())
    response_parser = httptools.HttpResponseParser(Nothing())
    requests = [request(n) for n in range(KEYS)]

    def one(n: int) -> None:
        request_parser.feed_data(requests[n % KEYS])
        response_parser.feed_data(RESPONSE)

    return one


def best_us(round_: Callable[[int], None], count: int, passes: int) -> float:
    """CPU µs per round, best of `passes` (after a warm-up)."""
    for n in range(2000):
        round_(n)
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for n in range(count):
            round_(n)
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def interpreted_us(requests: int, passes: int) -> float:
    """The proxy round on the Python source: a fresh interpreter, since modules load once per process."""
    command = [sys.executable, "-m", "bench.dataplane_bench", "--proxy-only"]
    command += [f"--requests={requests}", f"--passes={passes}"]
    env = {**os.environ, "LB_COMPILED": "false"}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "dataplane.md")
    parser.add_argument("--proxy-only", action="store_true", help="print only the LB's µs per request")
    args = parser.parse_args(argv)
    loop = uvloop.new_event_loop()
    try:
        proxy, transport = proxy_round(loop)
        ours = best_us(proxy, args.requests, args.passes)
        floor = best_us(parsers_round(), args.requests, args.passes)
    finally:
        loop.close()
    if transport.writes < args.requests:
        raise SystemExit(f"only {transport.writes} responses reached the client for {args.requests} requests")
    if args.proxy_only:
        print(f"{ours:.4f}")
        return 0
    mode = "compiled" if native.STATE.compiled else "interpreted"
    rows = [
        f"| the LB's ClientConnection + StreamConnection, rendezvous, 3 replicas ({mode}) | {ours:.2f} | "
        f"{ours / floor:.1f} |"
    ]
    if native.STATE.compiled:
        source = interpreted_us(args.requests, args.passes)
        rows.append(f"| the same, interpreted (LB_COMPILED=false) | {source:.2f} | {source / floor:.1f} |")
    text = "\n".join(
        [
            "# The data plane's Python per proxied request (no sockets; CPU time, best of "
            f"{args.passes} passes of {args.requests:,})",
            "",
            "| round | µs per request | × the parsers alone |",
            "|---|---:|---:|",
            f"| httptools parsing request + response, callbacks do nothing | {floor:.2f} | 1.00 |",
            *rows,
            "",
        ]
    )
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
