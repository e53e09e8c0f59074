"""The upstream client alone: our upstream client vs httpx.AsyncClient (vs aiohttp when installed), one run.

A bare ASGI app on uvicorn + uvloop + httptools (its own process) answers GET /home with a 57-byte JSON.
Each client does sequential GETs, then GETs from 32 concurrent workers, on uvloop like the proxy. Prints and
writes bench/out/upstream.md: wall µs/request, client-process CPU µs/request, and ratios to ours.
A "floor" row (raw Protocol, fixed request bytes, no parsing) shows what is left to win.
`python -m bench.upstream_bench [--requests N] [--concurrency C] [--passes P]`
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvloop

from app.upstream.pool import UpstreamPool
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"message":"Hello from Server: S1","status":"successful"}'
HEADERS = [(b"host", b"replica"), (b"user-agent", b"bench"), (b"accept", b"*/*")]

Request = Callable[[int], Awaitable[None]]


async def backend_app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Any]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """The replica's /home without FastAPI, so the backend costs as little as possible."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"57")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def serve(fd: int) -> None:
    import uvicorn

    # Not uvicorn's fd=: it wraps the fd as AF_UNIX, so accepted TCP sockets never get TCP_NODELAY and
    # its two writes per response (head, body) meet the client's delayed ACK: 40 ms per request.
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(
        backend_app, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])


def start_backend() -> tuple[subprocess.Popen[bytes], socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    fd = sock.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream_bench", "--serve-fd", str(fd)], cwd=ROOT, pass_fds=[fd]
    )
    port = sock.getsockname()[1]
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.sendall(b"GET /home HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if probe.recv(4096).startswith(b"HTTP/1.1 200"):
                    return proc, sock
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("backend did not start")
        time.sleep(0.05)


@dataclass
class Result:
    client: str
    mode: str
    wall_us: float
    cpu_us: float


async def drive(workers: list[Request], total: int) -> tuple[float, float]:
    """Share `total` requests among the workers; return (wall µs, this process's CPU µs) per request."""
    per_worker = total // len(workers)

    async def work(call: Request) -> None:
        for i in range(per_worker):
            await call(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(work(call) for call in workers))
    done = per_worker * len(workers)
    return (time.perf_counter() - wall) / done * 1e6, (time.process_time() - cpu) / done * 1e6


class Floor(asyncio.Protocol):
    """Fixed request bytes and a known response length: the least any client could do on asyncio."""

    def __init__(self, response_size: int) -> None:
        self.size = response_size
        self.got = 0
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.size and self.waiter is not None:
            self.got -= self.size
            self.waiter.set_result(None)
            self.waiter = None


async def make_clients(port: int, total: int) -> list[tuple[str, int, Callable[[int], Request], Any]]:
    """(name, request count, factory of a per-worker request function, closer) for every client."""
    base = f"http://127.0.0.1:{port}"
    clients: list[tuple[str, int, Callable[[int], Request], Any]] = []

    pool = UpstreamPool("127.0.0.1", port, connect_timeout=1.0, read_timeout=10.0, max_idle=64)

    def ours(_: int) -> Request:
        async def call(i: int) -> None:
            response = await pool.request(b"GET", b"/home?id=%d" % i, HEADERS)
            assert response.status == 200 and len(response.body) == 57

        return call

    clients.append(("app.upstream.pool", total, ours, pool.close))

    loop = asyncio.get_running_loop()
    raw = b"GET /home?id=123456 HTTP/1.1\r\nhost: replica\r\nuser-agent: bench\r\naccept: */*\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
        probe.sendall(raw)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(BODY):
            reply += probe.recv(65536)
        size = len(reply)  # constant: uvicorn's date header has a fixed width
    floors: list[asyncio.Transport] = []

    def floor(_: int) -> Request:
        protocol: Floor | None = None

        async def call(i: int) -> None:
            nonlocal protocol
            if protocol is None:
                transport, protocol = await loop.create_connection(lambda: Floor(size), "127.0.0.1", port)
                floors.append(transport)
            waiter = protocol.waiter = loop.create_future()
            assert protocol.transport is not None
            protocol.transport.write(raw)
            await waiter

        return call

    async def close_floor() -> None:
        for transport in floors:
            transport.close()

    clients.append(("floor: raw Protocol, no parsing", total, floor, close_floor))

    client = httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_keepalive_connections=64))

    def via_httpx(_: int) -> Request:
        async def call(i: int) -> None:
            response = await client.get(f"/home?id={i}", headers={"user-agent": "bench"})
            assert response.status_code == 200 and len(response.content) == 57

        return call

    clients.append(("httpx.AsyncClient", max(total // 10, 320), via_httpx, client.aclose))

    try:
        import aiohttp
    except ImportError:
        print("aiohttp is not installed: its rows are skipped")
    else:
        session = aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=0))

        def via_aiohttp(_: int) -> Request:
            async def call(i: int) -> None:
                async with session.get(f"/home?id={i}") as response:
                    body = await response.read()
                    assert response.status == 200 and len(body) == 57

            return call

        clients.append(("aiohttp.ClientSession", max(total // 4, 320), via_aiohttp, session.close))
    return clients


async def run(port: int, total: int, concurrency: int, passes: int) -> list[Result]:
    clients = await make_clients(port, total)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(passes):
        for name, count, factory, _closer in clients:
            for mode, workers in (("sequential", 1), (f"{concurrency} concurrent", concurrency)):
                functions = [factory(w) for w in range(workers)]
                await drive(functions, min(count, 2000))  # warm-up: connections, caches
                samples.setdefault((name, mode), []).append(await drive(functions, count))
    for _name, _count, _factory, closer in clients:
        await closer()
    return [
        Result(name, mode, statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs))
        for (name, mode), runs in samples.items()
    ]


def render(results: list[Result], args: argparse.Namespace) -> str:
    ours = {r.mode: r for r in results if r.client == "app.upstream.pool"}
    lines = [
        "# app.upstream.pool vs other asyncio HTTP clients",
        "",
        f"Backend: bare ASGI app on uvicorn + uvloop + httptools (own process), GET /home → 57-byte JSON. "
        f"Clients on uvloop; {args.requests} requests per run of ours (httpx: a tenth), median of "
        f"{args.passes} passes, each after a warm-up. Python {platform.python_version()}, "
        f"{platform.machine()}, 2 shared cores: compare ratios, not absolutes.",
        "",
        "| client | mode | wall µs/req | client CPU µs/req | CPU × app.upstream.pool |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.cpu_us / ours[r.mode].cpu_us
        lines.append(f"| {r.client} | {r.mode} | {r.wall_us:.1f} | {r.cpu_us:.1f} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--requests", type=int, default=20000, help="requests per timed run of our client")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "upstream.md")
    parser.add_argument("--serve-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_fd is not None:
        serve(args.serve_fd)
        return 0
    proc, sock = start_backend()
    try:
        results = uvloop.run(run(sock.getsockname()[1], args.requests, args.concurrency, args.passes))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        sock.close()
    report = render(results, args)
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
