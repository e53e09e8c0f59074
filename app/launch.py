"""Wiring in one place: settings -> listening socket -> the LB's app and data plane -> workers -> serve.

`python -m app` (app/__main__.py) calls `main`; tests that serve an LB in-process call `build` and
`make_config` the same way, so every launch gets the same data plane.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import sys
from types import FrameType
from typing import Literal

import uvicorn
import uvloop
from fastapi import FastAPI

from app import native
from app.control.lifecycle import LifecyclePolicy
from app.dataplane.access_log import make_access_log
from app.dataplane.edge import EdgeServer, prepare_tls
from app.dataplane.front import Front, FrontLimits
from app.dataplane.heap import settle_heap
from app.dataplane.hub import WorkerHub
from app.dataplane.server import make_config
from app.errors import quote
from app.main import create_app
from app.reload import Reloader
from app.settings import BAD_SETTINGS, Settings, load_settings
from app.unknown_settings import warn_unknown
from app.voting.store import open_vote_store

logger = logging.getLogger(__name__)

STARTUP_FAILED = 3  # uvicorn's: the lifespan failed (e.g. replicas that cannot start)


def build(settings: Settings) -> tuple[FastAPI, Front]:
    """The LB's own app and the data plane's front that serves it (the lifespan hands it the routing)."""
    app = create_app(settings)
    front = Front(
        FrontLimits.from_settings(settings),
        app.state.is_reserved,
        access_log=make_access_log(settings.access_log),
    )
    app.state.front = front
    app.state.reloader = Reloader(app, front)  # SIGHUP, POST /config/reload
    return app, front


class Server(EdgeServer):
    """uvicorn on a socket we bound, saying where it listens once the replicas are up."""

    def __init__(self, config: uvicorn.Config, reloader: Reloader | None = None) -> None:
        super().__init__(config)
        self.reloader = reloader

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.reloader is not None:
            self.reloader.listen()  # SIGHUP reloads from now on
        if self.started:  # uvicorn logs no address for sockets it was handed
            for sock in sockets or []:
                host, port = sock.getsockname()[:2]
                logger.info("Load balancer running on http://%s:%d (Press CTRL+C to quit)", host, port)


def _stopped_by(sig: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal that stopped it once it has shut down; a clean stop exits 0."""
    logger.info("stopped by %s", signal.Signals(sig).name)


def where_to_look(host: str, port: int) -> str:
    """The pages to open, for the start-up log (`make run` users look there first)."""
    host = "localhost" if host in ("", "0.0.0.0", "::") else host
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    return f"dashboard {base}/dashboard | voting page {base}/vote | API docs {base}/docs"


def listening_socket(settings: Settings) -> socket.socket:
    """The LB's port, taken before any replica starts: an inherited socket (LB_FD) or host:port.

    A port in use is one line and exit 2, not a traceback after three replicas were started.
    """
    if settings.fd is not None:
        return socket.socket(fileno=settings.fd)  # bound by whoever started us (tests, systemd)
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:  # worker processes bind the same port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        sys.stderr.write(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}\n")
        raise SystemExit(BAD_SETTINGS) from None
    return sock


def check_vote_store(settings: Settings) -> None:
    """Open the vote store once before anything starts: an LB_DB_PATH the settings' checks could not
    foresee (e.g. under /proc) is one line and exit 2, not a traceback after the replicas started.
    (A PostgreSQL store does no I/O here: a database that is down at start gets 503s, not an exit.)"""
    try:
        asyncio.run(open_vote_store(settings).close())
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        where = quote(str(settings.db_path))
        sys.stderr.write(f"invalid setting LB_DB_PATH={where}: cannot open the vote store ({reason})\n")
        raise SystemExit(BAD_SETTINGS) from None


def main() -> None:
    """Configure logging, bind the port, then serve on uvloop with the data plane's protocol."""
    settings = load_settings()
    check_vote_store(settings)  # before logging is set up: asyncio's debug lines are not start-up news
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    warn_unknown(logger)
    sock = listening_socket(settings)
    tls = prepare_tls(settings)  # a bad certificate or a busy LB_TLS_PORT: one line, exit 2
    host, port = sock.getsockname()[:2]  # the real port, also when the socket was inherited (LB_FD)
    logger.info("open %s", where_to_look(host, port))
    native.STATE.log(logger)
    if native.STATE.compiled and not settings.compiled:
        logger.warning("LB_COMPILED=false from .env comes too late: set it in the environment")
    app, front = build(settings)
    loop: Literal["none", "uvloop"] = "none" if settings.workers > 1 else "uvloop"  # workers: we run uvloop
    config = make_config(app, front, lifespan="on", access_log=settings.access_log, loop=loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_by)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server is up: then SIGHUP reloads
    server = Server(config, app.state.reloader)
    server.tls = app.state.tls = tls.serving(front) if tls is not None else None
    settle_heap()
    with sock:
        if settings.workers > 1:
            uvloop.run(serve_with_workers(server, sock, app, front, settings))
        else:
            server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILED)


async def serve_with_workers(
    server: uvicorn.Server, sock: socket.socket, app: FastAPI, front: Front, settings: Settings
) -> None:
    """This process owns replicas and health and serves the port; LB_WORKERS - 1 workers share it."""
    private = socket.socket()  # where workers send the LB's own paths (the shared port could loop back)
    private.bind(("127.0.0.1", 0))
    owner_address = f"127.0.0.1:{private.getsockname()[1]}"
    front.unlogged_port = private.getsockname()[1]  # the forwarding worker writes the access-log line
    serving = asyncio.create_task(server.serve(sockets=[sock, private]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if serving.done():
        await serving  # startup failed: uvicorn has logged why
        return
    # A worker that keeps dying is restarted after the replicas' back-off (0.5 s, 1 s, ... capped).
    backoff = LifecyclePolicy.from_settings(settings).backoff
    port = sock.getsockname()[1]  # the bound port: with LB_PORT=0 the workers must not pick their own
    hub = WorkerHub(
        app.state.membership,
        settings.workers,
        owner_address,
        settings.fd,
        port=port,
        tls_port=app.state.tls.port if getattr(app.state, "tls", None) is not None else None,
        backoff=backoff,
        reserved=app.state.is_reserved,
        settings=settings,
    )
    app.state.hub = hub  # /status lists the processes, /metrics adds their counters
    await hub.start()
    try:
        await serving
    finally:
        await hub.stop()
