"""Servers for the upstream client's tests: a byte-scripted asyncio server and a tiny ASGI app on uvicorn."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn

from tests.polling import wait_until
from tests.ports import bind_loopback

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def http_response(
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """Raw response bytes, with content-length unless the test wants another framing."""
    lines = [b"%s %d X" % (version, status)]
    lines += [name + b": " + value for name, value in headers or []]
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Request:
    """One request as the scripted server read it."""

    method: bytes
    target: bytes
    head: bytes
    headers: dict[bytes, bytes]
    body: bytes


class ServerConnection:
    """One accepted connection; handlers read requests and write replies through it."""

    def __init__(
        self, server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.index = index

    async def read_request(self) -> Request | None:
        """The next request, or None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        first, *lines = head[:-4].split(b"\r\n")
        method, target, _ = first.split(b" ", 2)
        headers = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        request = Request(method, target, head, headers, body)
        self.server.requests.append(request)
        return request

    async def send(self, *pieces: bytes, pause: float = 0.0) -> None:
        """Write pieces one by one (a pause between them makes separate TCP segments likely)."""
        for i, piece in enumerate(pieces):
            if i and pause:
                await asyncio.sleep(pause)
            self.writer.write(piece)
            await self.writer.drain()

    async def wait_client_close(self) -> None:
        """Block until the client closes or resets the connection."""
        while await self.reader.read(65536):
            pass


Handler = Callable[[ServerConnection], Awaitable[None]]


def keep_alive(reply: Callable[[Request, ServerConnection], bytes]) -> Handler:
    """A handler that answers every request on the connection with `reply` until the client leaves."""

    async def handle(conn: ServerConnection) -> None:
        while (request := await conn.read_request()) is not None:
            await conn.send(reply(request, conn))

    return handle


class ScriptedServer:
    """An HTTP server on 127.0.0.1 in the test's own loop, whose bytes each test scripts."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.finished = 0
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ScriptedServer:
        sock = bind_loopback()
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        # Ending handlers by closing their sockets, not by cancelling them: asyncio 3.11 logs
        # an error for every cancelled client_connected_cb task.
        for writer in self._writers:
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=5)
            assert not pending, "a handler ignored its closed connection"
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        try:
            await self.handler(ServerConnection(self, reader, writer, self.accepted - 1))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.finished += 1
            self._tasks.discard(task)
            self._writers.discard(writer)


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI test server: /echo, /status/<code>, /stream?n=<bytes>, /home."""
    assert scope["type"] == "http"
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    path: str = scope["path"]
    port = str(scope["client"][1]).encode()
    if path == "/echo":
        request_headers = dict(scope["headers"])
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"x-method", scope["method"].encode()),
            (b"x-content-length", request_headers.get(b"content-length", b"none")),
            (b"x-client-port", port),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path.startswith("/status/"):
        headers = [(b"x-client-port", port), (b"etag", b'"v1"')]
        await send({"type": "http.response.start", "status": int(path[8:]), "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        # No content-length and more_body: uvicorn frames this with chunked transfer-encoding.
        size = int(scope["query_string"].split(b"=")[1])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-client-port", port)]})
        piece = 65536
        for start in range(0, size, piece):
            data = bytes([start // piece % 256]) * min(piece, size - start)
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})


@contextmanager
def serve_asgi(app: Any) -> Iterator[int]:
    """Run `app` on uvicorn + httptools in a daemon thread on a pre-bound socket; yield its port."""
    sock = bind_loopback()
    config = uvicorn.Config(
        app, http="httptools", loop="asyncio", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
