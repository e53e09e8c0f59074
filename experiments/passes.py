"""Bounded request passes over HTTP: GET /home?id=<key> per key through httpx, and what each request saw.

The experiments have no HTTP client of their own: every request goes through `httpx.AsyncClient`
(HTTP/1.1, keep-alive, explicit limits and timeouts).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

# httpcore's pool scans all of its connections for every request it places, so one client with 64
# connections spent ~5 ms of client CPU per request here, and ~1 ms with 4 or fewer: a pass shares its
# concurrency among several small clients instead.
CONNECTIONS_PER_CLIENT = 4


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Shared because every AsyncClient otherwise builds its own (loading the CA bundle, ~50 ms), though
    # these clients speak plain http to the local LB.
    return ssl.create_default_context()


def make_client(connections: int, timeout: float) -> httpx.AsyncClient:
    """An HTTP/1.1 keep-alive client: at most `connections` connections, each phase bounded by `timeout`."""
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=30.0
    )
    # trust_env=False: an HTTP(S)_PROXY in the environment must not reroute requests meant for the local LB.
    return httpx.AsyncClient(
        limits=limits,
        timeout=httpx.Timeout(timeout),
        http1=True,
        http2=False,
        trust_env=False,
        verify=_tls_context(),
    )


def make_clients(concurrency: int, timeout: float) -> list[httpx.AsyncClient]:
    """Clients for `concurrency` requests in flight, CONNECTIONS_PER_CLIENT connections each."""
    count = max(1, -(-concurrency // CONNECTIONS_PER_CLIENT))
    return [make_client(CONNECTIONS_PER_CLIENT, timeout) for _ in range(count)]


def replica_of(message: str) -> str:
    """The replica name in "Hello from Server: <name>", parsed as the contract's clients do."""
    return message.split(":")[-1].strip()


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: when it was sent and answered (seconds from the pass start), who served it."""

    key: str
    sent: float
    done: float
    status: int  # 0: no HTTP response (transport error or not sent before the deadline)
    replica: str | None
    error: str | None = None


@dataclass
class PassResult:
    """Every request of one pass, in key order."""

    outcomes: list[Outcome]
    seconds: float
    started_at: float = 0.0  # time.time() when the pass began
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(1 for o in self.outcomes if o.status == 200 and o.replica is not None)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.ok

    @property
    def rate(self) -> float:
        return len(self.outcomes) / self.seconds if self.seconds > 0 else 0.0

    def mapping(self) -> dict[str, str]:
        """key -> replica for the successful requests (the last answer wins for repeated keys)."""
        return {o.key: o.replica for o in self.outcomes if o.status == 200 and o.replica is not None}


async def fetch_keys(
    clients: Sequence[httpx.AsyncClient],
    base_url: str,
    keys: Sequence[str],
    *,
    concurrency: int,
    max_seconds: float,
    path: str = "/home",
    on_done: Callable[[], None] | None = None,
    pace: float | None = None,
    origin: float | None = None,
) -> PassResult:
    """GET base_url+path?id=<key> for every key, at most `concurrency` in flight, stopping at `max_seconds`.

    Worker w sends through clients[w % len(clients)]. `pace` (requests/s) spaces the sends evenly. Times
    are seconds since `origin` (a loop.time() value; default: now). Keys not sent before the deadline are
    recorded with status 0 and error "deadline".
    """
    outcomes: list[Outcome | None] = [None] * len(keys)
    prefix = f"{base_url.rstrip('/')}{path}?id="
    loop = asyncio.get_running_loop()
    start = loop.time() if origin is None else origin
    started_at = time.time() - (loop.time() - start)
    deadline = loop.time() + max_seconds
    indices = iter(range(len(keys)))

    async def get(client: httpx.AsyncClient, key: str) -> tuple[int, str | None, str | None]:
        response = await client.get(prefix + key)
        if response.status_code != 200:
            return response.status_code, None, response.content[:200].decode(errors="replace")
        return 200, replica_of(str(response.json()["message"])), None

    async def worker(client: httpx.AsyncClient) -> None:
        for i in indices:
            key = keys[i]
            if pace:
                delay = start + i / pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent = loop.time()
            if sent >= deadline:
                outcomes[i] = Outcome(key, sent - start, sent - start, 0, None, "deadline")
                continue
            try:
                status, replica, error = await get(client, key)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                status, replica, error = 0, None, f"{type(exc).__name__}: {exc}"
            outcomes[i] = Outcome(key, sent - start, loop.time() - start, status, replica, error)
            if on_done is not None:
                on_done()

    workers = max(1, min(concurrency, len(keys)))
    await asyncio.gather(*(worker(clients[w % len(clients)]) for w in range(workers)))
    done = [o for o in outcomes if o is not None]
    assert len(done) == len(keys)
    return PassResult(done, loop.time() - start, started_at)
