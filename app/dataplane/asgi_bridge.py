"""The LB's own paths (/add, /rep, /docs, the vote page, ...) through ASGI into the FastAPI app.

Only reserved paths come here (proxied ones never do), so this favours being small
and correct over being fast: the request body is read whole (bounded by LB_MAX_BODY_BYTES) before the
app sees it, and the response is written as the app sends it, waiting while the client is slow.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.dataplane.http1 import NO_BODY_STATUSES, RequestHead, encode_chunk, status_line
from app.dataplane.replies import failure_body, too_large
from app.dataplane.seams import AsgiClientSide

logger = logging.getLogger(__name__)

_ASGI = {"version": "3.0", "spec_version": "2.4"}


class AsgiExchange:
    """One request served by the FastAPI app in a Task."""

    upstream = ""  # answered by the LB itself (for the access log)
    began = 0.0  # perf_counter() at the head, set only when the access log is on
    logged = False

    def __init__(self, client: AsgiClientSide, head: RequestHead, max_body_bytes: int) -> None:
        self._client = client
        self._limit = max_body_bytes  # the control limit on the LB's own paths, else the proxy's
        self.head = head
        self.body_done = not head.has_body
        self.leftover = b""
        self._body: list[bytes] = []
        self._size = 0
        self._body_ready: asyncio.Future[None] = client.loop.create_future()
        self._gone: asyncio.Future[None] = client.loop.create_future()
        self._body_read = self._started = self._complete = self._chunked = self._rejected = False
        self._pending_head = b""
        self.status = 0
        if self.body_done:
            self._body_ready.set_result(None)
        if head.length is not None and head.length > max_body_bytes:
            self._rejected = True  # a declared length over the limit: refused before a byte is read

    @property
    def started(self) -> bool:
        """Whether response bytes went (or are going) to the client."""
        return self._started

    def start(self) -> None:
        """Run the app for this request in a Task (uvicorn keeps it for graceful shutdown)."""
        if self._rejected:
            self._reply_too_large()
            return
        task = self._client.loop.create_task(self._run())
        tasks = self._client.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_request_body(self, data: bytes) -> None:
        """Collect the body (bounded)."""
        self._size += len(data)
        if self._complete or self._rejected:
            return  # answered without reading it: the parser drops the rest
        if self._size > self._limit:
            if not self._rejected:
                self._rejected = True
                self._body.clear()
                self._wake(self._body_ready)
            return
        self._body.append(data)

    def on_request_end(self) -> None:
        """The body is complete: the app may read it."""
        self.body_done = True
        self._wake(self._body_ready)

    def on_client_writable(self, writable: bool) -> None:
        """Handled by ClientConnection.drain."""

    def on_client_lost(self) -> None:
        """The client went away: the app's receive() says http.disconnect."""
        self._wake(self._body_ready)
        self._wake(self._gone)

    # -- ASGI --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        client, head = self._client, self.head
        # The body first, whole and bounded: a 413 holds whatever the route would answer (e.g. a 405).
        await self._body_ready
        if self._rejected:
            self._reply_too_large()
            return
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": head.version,
            "server": client.sockname,
            "client": client.peer,
            "scheme": "http",
            "method": head.method.decode("latin-1"),
            "root_path": client.config.root_path,
            "path": head.path,
            "raw_path": head.target.partition(b"?")[0],
            "query_string": head.query,
            "headers": head.headers,
            "state": client.app_state.copy(),
        }
        try:
            await client.config.loaded_app(scope, self._receive, self._send)
        except Exception:
            logger.exception("error while serving %s %s", scope["method"], head.path)
            if not self._started:
                self.status = 500
                self._finish(client.error_bytes(500, failure_body("Internal error of the load balancer")))
            elif not self._complete:
                client.abort()
            return
        if not self._complete:
            if self._started:
                client.abort()
            else:
                self.status = 500
                self._finish(client.error_bytes(500, failure_body("The load balancer sent no response")))

    async def _receive(self) -> dict[str, Any]:
        if not self._body_read:
            await self._body_ready
            if self._rejected:
                self._reply_too_large()
            elif not self._gone.done():
                self._body_read = True
                return {"type": "http.request", "body": b"".join(self._body), "more_body": False}
        await self._gone
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if self._complete or self._gone.done():
            return
        kind = message["type"]
        if kind == "http.response.start":
            self._started = True
            self._pending_head = self._encode_head(message["status"], message.get("headers", []))
        elif kind == "http.response.body":
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            if self.head.method == b"HEAD":
                body = b""
            elif self._chunked:
                body = (encode_chunk(body) if body else b"") + (b"" if more else b"0\r\n\r\n")
            data, self._pending_head = self._pending_head + body, b""
            if not more:
                self._finish(data)
                return
            if data:
                self._client.write(data)
            await self._client.drain()

    def _encode_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        client, head = self._client, self.head
        self.status = status
        parts = [status_line(status)]
        framed = False
        for name, value in headers:
            lowered = name.lower()
            if lowered in (b"content-length", b"transfer-encoding"):
                framed = framed or lowered == b"content-length"
                if lowered == b"transfer-encoding":
                    continue  # we frame chunked bodies ourselves
            parts += (name, b": ", value, b"\r\n")
        if not framed and head.method != b"HEAD" and status not in NO_BODY_STATUSES:
            if head.version == "1.1":
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
            else:
                client.keep_alive = False
        if self._rejected:
            client.keep_alive = False
        if not (client.keep_alive and head.keep_alive):
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _finish(self, data: bytes) -> None:
        self._complete = True
        self._client.write(data)
        self._client.finish(self)

    def _reply_too_large(self) -> None:
        if self._started or self._complete:
            return
        self._started = True
        self.status = 413
        self._client.keep_alive = False
        self._finish(self._client.error_bytes(413, too_large(self._limit)))

    @staticmethod
    def _wake(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)
