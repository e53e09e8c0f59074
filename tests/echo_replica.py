"""A test replica: the contract's /home and /heartbeat, plus routes that echo or misbehave on purpose.

`/echo/...` returns the request as JSON; `/slow?secs=S` answers late (`/slow-count`: how many are waiting);
`/status/<code>` answers <code>;
`/chunked` streams its body; `/crash` exits the process without answering; `/big?mib=N[&chunked=1]`
streams N MiB of `pattern()`; `/upload` counts and hashes the body it reads; `/die?mib=N` announces more
than it sends, then the process dies; `/ws` is a WebSocket echo that first says its server name.
Run like the real replica: `python -m tests.echo_replica --fd N`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import uvicorn

NAME = os.environ.get("SERVER_ID", "unknown")
HOME_DELAY = [0.0]  # --home-delay: /home answers after this many seconds (a replica with I/O latency)
SLOW_WAITING = [0]  # /slow requests that have arrived and not been answered yet


MIB = 1024 * 1024
PIECE_BYTES = 65536


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes (a multiple of 64 KiB) in 64 KiB pieces, each filled with its own index: a lost,
    repeated or reordered piece changes the body's hash, and making it costs no more than b"x" * n."""
    for index in range(size // PIECE_BYTES):
        yield struct.pack("!Q", index) * (PIECE_BYTES // 8)


async def websocket_echo(receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": NAME})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def stream(send: Any, mib: int, chunked: bool, die: bool = False) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if not chunked:
        headers.append((b"content-length", str((2 * mib if die else mib) * MIB).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in pattern(mib * MIB):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    if die:
        await asyncio.sleep(0.2)  # let the bytes leave before dying
        os._exit(3)
    await send({"type": "http.response.body", "body": b""})


async def count_upload(receive: Any, send: Any) -> None:
    size, more, digest = 0, True, hashlib.sha256()
    while more:
        message = await receive()
        body = message.get("body", b"")
        size += len(body)
        digest.update(body)
        more = message.get("more_body", False)
    payload = json.dumps({"server": NAME, "received": size, "sha256": digest.hexdigest()}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await websocket_echo(receive, send)
        return
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    if path in ("/big", "/die"):
        mib = int(query.get("mib", ["1"])[0])
        await stream(send, mib, "chunked" in query, die=path == "/die")
        return
    if path == "/upload":
        await count_upload(receive, send)
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status, payload, headers = 404, b"", [(b"content-type", b"text/plain")]
    if path == "/home":
        if HOME_DELAY[0]:
            await asyncio.sleep(HOME_DELAY[0])
        status = 200
        payload = json.dumps({"message": f"Hello from Server: {NAME}", "status": "successful"}).encode()
    elif path == "/heartbeat":
        status = 200
    elif path.startswith("/echo"):
        status = 200
        payload = json.dumps(
            {
                "server": NAME,
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body": body.decode("latin-1"),
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"x-replica", NAME.encode())]
    elif path == "/slow":
        secs = float(query.get("secs", ["5"])[0])
        SLOW_WAITING[0] += 1
        try:
            await asyncio.sleep(secs)
        finally:
            SLOW_WAITING[0] -= 1
        status, payload = 200, b"late"
    elif path == "/slow-count":
        status, payload = 200, str(SLOW_WAITING[0]).encode()
    elif path.startswith("/status/"):
        status, payload = int(path.rsplit("/", 1)[1]), b"as asked"
    elif path == "/crash":
        os._exit(3)  # the connection dies with no answer, as when a replica is killed mid-request
    elif path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--home-delay", type=float, default=0.0)
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds requests get on SIGTERM (0: cut them, as docker rm -f)",
    )
    args = parser.parse_args()
    HOME_DELAY[0] = args.home_delay
    sock = socket.socket(fileno=args.fd)  # not uvicorn's fd=, which assumes AF_UNIX
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=args.grace)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
