"""A data-plane worker process (LB_WORKERS > 1): serves the shared port with the owner's routing table.

Started by the owner's WorkerHub as `python -m app.dataplane.worker`; takes the owner's settings in force.
It starts no replicas and probes nothing: its ring and replica addresses come from the owner, and
the LB's own paths are proxied to the owner, so /add, /rep and /status answer the same from any worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from app.control.routing import RoutingTable
from app.dataplane.access_log import make_access_log
from app.dataplane.edge import EdgeServer, TlsListener, load_certificates, prepare_tls
from app.dataplane.exchange import DataPlane
from app.dataplane.front import Front, FrontLimits, ReservedPaths
from app.dataplane.heap import settle_heap
from app.dataplane.hub import DRAIN_POLL, encode_message, read_message
from app.dataplane.keys import make_key_extractor
from app.dataplane.replies import failure_body
from app.dataplane.server import make_config
from app.dataplane.tls import CertificateError
from app.metrics import Stats
from app.ring import Ring
from app.ring.registry import make_strategy
from app.settings import Settings
from app.upstream.pool import UpstreamPool

logger = logging.getLogger(__name__)

OWNER = "the LB's owner process"


class SingleRing:
    """A ring of one: every key goes to `name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def lookup(self, key: str) -> str:
        """Always the one name."""
        return self.name

    def successors(self, key: str) -> Iterator[str]:
        """Only the one name: nothing to fail over to."""
        yield self.name


class RemoteRouting:
    """The owner's routing table as last pushed; failures seen here are reported to the owner."""

    def __init__(self, settings: Settings, writer: asyncio.StreamWriter) -> None:
        self.settings = settings
        self.writer = writer
        self.table = RoutingTable(make_strategy(settings.strategy, settings.vnodes).build([]), {})
        self._draining: dict[str, UpstreamPool] = {}  # dropped replicas still finishing requests
        self._watchers: set[asyncio.Task[None]] = set()  # one per draining name (strong references)
        self.front: Front | None = None  # set once serving: a reload's settings apply to it
        self.tls: TlsListener | None = None  # the HTTPS listener: a reload reads its certificates again

    def apply(self, ring: Ring, members: list[tuple[str, str]]) -> dict[str, UpstreamPool]:
        """Swap in the owner's ring; keep the connection pools of replicas whose address is unchanged.

        Returns the dropped pools that still have requests in flight, by replica name.
        """
        names = {pool.address: name for name, pool in self.table.upstreams.items()}
        old = {pool.address: pool for pool in self.table.upstreams.values()}
        upstreams: dict[str, UpstreamPool] = {}
        for name, address in members:
            pool = old.pop(address, None)
            if pool is None:
                host, port = address.rsplit(":", 1)
                pool = UpstreamPool(
                    host.strip("[]"),
                    int(port),
                    connect_timeout=self.settings.connect_timeout,
                    read_timeout=self.settings.read_timeout,
                    max_idle=self.settings.max_idle_connections,
                )
            upstreams[name] = pool
        self.table = RoutingTable(ring, upstreams)
        for gone in old.values():
            asyncio.get_running_loop().create_task(gone.close())  # idle connections; busy ones finish
        return {names[address]: gone for address, gone in old.items() if gone.in_flight}

    async def follow(self, reader: asyncio.StreamReader) -> None:
        """Swap in every table the owner pushes, until the connection ends (IncompleteReadError)."""
        while True:
            message = await read_message(reader)
            if message[0] == "table":
                _, version, ring, members = message
                await self.swap(version, ring, members)
            elif message[0] == "settings":
                self.reconfigure(message[1])

    def reconfigure(self, settings: Settings) -> None:
        """The owner reloaded: its live settings apply here too (new pools take them from self.settings)."""
        self.settings = settings
        for pool in self.table.upstreams.values():
            pool.retune(settings.connect_timeout, settings.read_timeout, settings.max_idle_connections)
        if self.front is not None:
            self.front.reconfigure(settings)
        if self.tls is not None:
            try:
                certificates = load_certificates(settings)
            except CertificateError as exc:  # changed on disk since the owner read them: keep ours
                logger.error("certificates not reloaded: %s", exc)
            else:
                if certificates is not None:
                    self.tls.use(certificates)

    async def swap(self, version: int, ring: Ring, members: list[tuple[str, str]]) -> None:
        """Apply a table, acknowledge it, then report each dropped replica once its requests are done."""
        busy = self.apply(ring, members)
        self._send(("applied", version, sorted(busy)))
        for name, pool in busy.items():
            if name not in self._draining:
                watcher = asyncio.get_running_loop().create_task(self._report_drained(name))
                self._watchers.add(watcher)
                watcher.add_done_callback(self._watchers.discard)
            self._draining[name] = pool

    async def _report_drained(self, name: str) -> None:
        while (pool := self._draining.get(name)) is not None and pool.in_flight:
            await asyncio.sleep(DRAIN_POLL)
        self._draining.pop(name, None)
        self._send(("drained", name))

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per replica, those still draining included (for the owner's /status)."""
        counts = {name: pool.in_flight for name, pool in self._draining.items() if pool.in_flight}
        for name, pool in self.table.upstreams.items():
            if pool.in_flight:
                counts[name] = counts.get(name, 0) + pool.in_flight
        return counts

    def _send(self, message: tuple[object, ...]) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_message(message))

    def report_failure(self, name: str, reason: str) -> None:
        """Tell the owner; its pool decides, and pushes the new table back."""
        self._send(("failure", name, reason))


class OwnerRouting:
    """Routing for the LB's own paths: everything goes to the owner's private listener."""

    def __init__(self, address: str, settings: Settings) -> None:
        host, port = address.rsplit(":", 1)
        # /add waits for new replicas to start: give it their start timeout and more.
        timeout = max(60.0, 3 * settings.start_timeout)
        self.pool = UpstreamPool(host, int(port), connect_timeout=2.0, read_timeout=timeout)
        self.table = RoutingTable(SingleRing(OWNER), {OWNER: self.pool})

    def report_failure(self, name: str, reason: str) -> None:
        """The owner is not a replica: nothing to take off a ring."""


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A listening socket that other processes of this LB may bind too (the kernel spreads connections)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def no_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A worker serves no ASGI app: its proxied paths have a data plane and its own paths go to the owner."""
    body = failure_body("Not served here: a worker proxies every path")
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve(
    control: str, owner: str, index: int = 1, port: int | None = None, tls_port: int | None = None
) -> None:
    """Take the owner's settings and first table, then serve until told to stop or the owner goes away.

    The settings come from the owner, not from this process's environment: a settings file edited since the
    owner's last reload can neither make a (re)started worker differ from the owner nor stop it.
    """
    owner_pid = os.getppid()
    reader, writer = await asyncio.open_unix_connection(control)
    _, settings = await read_message(reader)
    if port is not None:  # the owner's bound port (LB_PORT=0 picks one: the workers take the same)
        settings = settings.model_copy(update={"port": port})
    if tls_port is not None:
        settings = settings.model_copy(update={"tls_port": tls_port})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
    )
    routing = RemoteRouting(settings, writer)
    _, exact, prefixes = await read_message(reader)  # the owner's own paths, forwarded to it
    _, version, ring, members = await read_message(reader)
    await routing.swap(version, ring, members)
    extract_key = make_key_extractor(settings.key_source, settings.key_name)
    stats = Stats()  # this worker's counters; the owner adds them to its own in /metrics and /status
    plane = DataPlane(
        routing,
        extract_key,
        max_tries=settings.max_tries,
        max_body_bytes=settings.max_body_bytes,
        stats=stats,
        balance_factor=settings.balance_factor,  # on this worker's own in-flight counts
    )
    owner_plane = DataPlane(
        OwnerRouting(owner, settings),
        lambda scope: OWNER,
        max_tries=1,
        max_body_bytes=settings.max_control_body_bytes,
        translate_404=False,
        names_replicas=False,
    )
    access_log = make_access_log(settings.access_log)
    reserved = ReservedPaths(exact, prefixes)
    front = Front(FrontLimits.from_settings(settings), reserved, owner=owner_plane, access_log=access_log)
    front.data_plane = plane
    routing.front = front
    server = EdgeServer(make_config(no_app, front, lifespan="off", access_log=settings.access_log))
    tls = prepare_tls(settings, worker=True)
    server.tls = routing.tls = tls.serving(front) if tls is not None else None
    settle_heap()

    async def follow() -> None:
        try:
            await routing.follow(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            logger.warning("the owner process went away; stopping")
            server.should_exit = True

    follower = asyncio.create_task(follow())
    reporter = asyncio.create_task(report_stats(stats, routing, writer, settings.worker_stats_interval))
    try:
        # uvicorn re-raises the SIGTERM that stopped it once it has shut down: with a handler that
        # returns in place, the clean-up below still runs (before serving, SIGTERM ends us at once).
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        # LB_FD: the owner passed its inherited socket on; otherwise each worker binds the port itself.
        sock = socket.socket(fileno=settings.fd) if settings.fd is not None else None
        await server.serve(sockets=[sock or bind_reuseport(settings.host, settings.port)])
    finally:
        for task in (follower, reporter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer.close()
        if os.getppid() != owner_pid:
            # The owner died without its clean-up (kill -9; its death is what stopped us): its private
            # folder is left to its workers.
            shutil.rmtree(Path(control).parent, ignore_errors=True)


async def report_stats(
    stats: Stats, routing: RemoteRouting, writer: asyncio.StreamWriter, interval: float
) -> None:
    """Send the owner this worker's counters and requests in flight every `interval` seconds, when they
    moved (off the hot path)."""
    sent: tuple[int, dict[str, int]] = (0, {})
    pid = os.getpid()
    while not writer.is_closing():
        await asyncio.sleep(interval)
        now = (stats.activity(), routing.in_flight())
        if now != sent:
            stats.in_flight = now[1]
            writer.write(encode_message(("stats", pid, stats)))
            sent = now


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control", required=True, help="the owner's unix socket")
    parser.add_argument("--owner", required=True, help="host:port of the owner's private listener")
    parser.add_argument("--index", type=int, default=1)
    parser.add_argument("--port", type=int, default=None, help="the owner's bound port (overrides LB_PORT)")
    parser.add_argument("--tls-port", type=int, default=None, help="the owner's bound HTTPS port")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the owner's: it sends us the settings
    uvloop.run(serve(args.control, args.owner, args.index, args.port, args.tls_port))


if __name__ == "__main__":
    main()
