"""Lean pooled HTTP/1.1 client on asyncio + httptools: the proxy's upstream leg (hot path).

PLACEHOLDER: the real implementation replaces this file; the API below is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass


class UpstreamError(Exception):
    """Any failure to get a response from a replica."""


class UpstreamConnectError(UpstreamError):
    """No byte of the request reached the replica (refused, reset on connect, connect timeout)."""


class UpstreamResetError(UpstreamError):
    """The connection broke after the request was (maybe) sent and before a full response."""


class UpstreamTimeout(UpstreamError):
    """The replica accepted the request but did not answer within read_timeout."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class UpstreamPool:
    """Keep-alive connections to one replica."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 0.5,
        read_timeout: float = 10.0,
        max_idle: int = 64,
    ) -> None:
        raise NotImplementedError

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
