"""The hot path: request key -> ring -> pooled upstream call -> response, on raw ASGI.

Everything that can be decided once (key extractor, header filters, error bodies) is decided in
__init__; per request there is one ring lookup, one upstream write and two ASGI sends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import TYPE_CHECKING, Any

from app.dataplane.balance import pick_bounded
from app.dataplane.keys import random_key
from app.dataplane.limits import declared_length, read_body, too_large
from app.dataplane.replies import failure_body, reply
from app.dataplane.upstream import (
    HOP_BY_HOP_HEADERS,
    IDEMPOTENT_METHODS,
    StaleConnectionError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamResponse,
    UpstreamTimeout,
)
from app.errors import NoReplicasError, quote

if TYPE_CHECKING:
    from app.dataplane.exchange import DataPlane

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Proxy:
    """A raw ASGI app that forwards a request to the replica its key hashes to, with retries."""

    def __init__(self, plane: DataPlane) -> None:
        """The buffered ASGI path (LB_FAST_PATH=false), with the data plane's routing, limits and counters."""
        self.pool = plane.pool
        self.stats = plane.stats
        self._replica_stats = self.stats.replicas  # the dict itself: one lookup per request
        self.balance_factor = plane.balance_factor  # None: plain consistent hashing
        self.extract_key = plane.extract_key
        self.max_tries = plane.max_tries
        self.max_body_bytes = plane.max_body_bytes
        self._methods: dict[str, bytes] = {}
        self._no_replicas = plane.no_replicas

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = self._methods.get(scope["method"])
        if method is None:
            method = self._methods.setdefault(scope["method"], scope["method"].encode("latin-1"))
        key = self.extract_key(scope) or random_key()
        headers, has_body = self._forward_headers(scope)
        body = b""
        if has_body:
            limit = self.max_body_bytes
            length = declared_length(scope["headers"])
            # A declared length over the limit is refused before a byte of the body is read.
            body_or_none = None if length and length > limit else await read_body(receive, limit)
            if body_or_none is None:
                await self._reply(send, 413, too_large(self.max_body_bytes))
                return
            body = body_or_none
        qs: bytes = scope["query_string"]
        target: bytes = scope.get("raw_path") or scope["path"].encode()
        if qs:
            target = target + b"?" + qs

        table = self.pool.table
        try:
            name = table.ring.lookup(key)
        except NoReplicasError:  # nothing is UP right now
            await self._reply(send, 503, self._no_replicas)
            return
        if self.balance_factor is not None:
            chosen = pick_bounded(table.ring, key, name, table.upstreams, self.balance_factor)
            if chosen != name:
                (self._replica_stats.get(name) or self.stats.replica(name)).diverted += 1
                name = chosen
        counters = self._replica_stats.get(name) or self.stats.replica(name)
        started = perf_counter()
        try:
            response = await table.upstreams[name].request(method, target, headers, body)
        except UpstreamError as exc:
            counters.errors += 1
            retried = await self._retry(name, exc, key, method, target, headers, body, send)
            if retried is None:
                return
            response = retried
        else:
            counters.observe(response.status, perf_counter() - started)

        if response.status == 404:
            path = quote(scope["path"])
            await self._reply(send, 400, failure_body(f"{path} endpoint does not exist in server replicas"))
            return
        if method != b"HEAD":  # a HEAD answer has no body; a length of 0 would misstate the resource's
            response.headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _retry(
        self,
        failed: str,
        exc: UpstreamError,
        key: str,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        send: Send,
    ) -> UpstreamResponse | None:
        """Try the next distinct replicas clockwise; reply with the error and return None if none answers."""
        tried = {failed}
        while True:
            if isinstance(exc, UpstreamTimeout):
                await self._reply(send, 504, failure_body(f"Replica '{failed}' did not answer in time"))
                return None
            if (
                isinstance(exc, StaleConnectionError)
                and method not in IDEMPOTENT_METHODS
                and await self._is_gone(failed)
            ):
                # A reused connection died without a byte of answer and the replica now refuses
                # connections: it is gone (e.g. killed while the connection was idle), so try the next one.
                exc = UpstreamConnectError(str(exc))
            if isinstance(exc, UpstreamResetError) and method not in IDEMPOTENT_METHODS:
                # It may have been processed: repeating a POST elsewhere could apply it twice.
                await self._reply(
                    send, 502, failure_body(f"Replica '{failed}' closed the connection mid-request")
                )
                return None
            if isinstance(exc, UpstreamConnectError):
                # Refused: the replica is gone. (A reset may be one bad request, so it only retries.)
                self.pool.report_failure(failed, "connection refused")
            logger.info("request to %s failed (%s); trying the next replica", failed, exc)
            table = self.pool.table
            candidate = None
            if len(tried) < self.max_tries:
                candidate = next((name for name in table.ring.successors(key) if name not in tried), None)
            if candidate is None:
                await self._reply(send, 503, failure_body("No replica could answer the request"))
                return None
            self.stats.replica(failed).retries += 1
            tried.add(candidate)
            failed = candidate
            counters = self.stats.replica(candidate)
            started = perf_counter()
            try:
                response = await table.upstreams[candidate].request(method, target, headers, body)
            except UpstreamError as next_exc:
                counters.errors += 1
                exc = next_exc
            else:
                counters.observe(response.status, perf_counter() - started)
                return response

    async def _reply(self, send: Send, status: int, body: bytes) -> None:
        """Answer with the LB's own error body (counted as the LB's, not a replica's, answer)."""
        self.stats.replied(status)
        await reply(send, status, body)

    async def _is_gone(self, name: str) -> bool:
        """Whether `name` has left the ring (its exit was seen meanwhile) or now refuses connections."""
        upstream = self.pool.table.upstreams.get(name)
        return upstream is None or await upstream.refuses()

    def _forward_headers(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Copy end-to-end headers, add X-Forwarded-For; report whether a body follows."""
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        out: list[tuple[bytes, bytes]] = []
        has_body = False
        drop: frozenset[bytes] | set[bytes] = HOP_BY_HOP_HEADERS
        forwarded_for = b""
        for name, value in raw:
            if name in drop:
                if name == b"content-length":
                    has_body = value != b"0"
                elif name == b"transfer-encoding":
                    has_body = True
                elif name == b"connection":
                    # Headers the client named in Connection are hop-by-hop too.
                    drop = HOP_BY_HOP_HEADERS | {t.strip().lower() for t in value.split(b",")}
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value
                continue
            out.append((name, value))
        if drop is not HOP_BY_HOP_HEADERS:
            out = [(n, v) for n, v in out if n not in drop]
        client = scope.get("client")
        if client:
            ip = client[0].encode()
            out.append((b"x-forwarded-for", forwarded_for + b", " + ip if forwarded_for else ip))
        return out, has_body
