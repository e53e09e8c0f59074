"""`python -m app`: run the LB with settings from the environment (LB_* variables)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

import uvicorn
import uvloop
from pydantic import ValidationError

from app.dataplane.front import LoadBalancerApp
from app.dataplane.hub import WorkerHub
from app.dataplane.server import Front, FrontLimits
from app.dataplane.worker import bind_reuseport, make_config
from app.main import create_app
from app.settings import Settings


def load_settings() -> Settings:
    """Settings from the environment; a bad value exits with one line per problem, not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "LB_" + "_".join(str(part) for part in err["loc"]).upper()
            sys.stderr.write(f"invalid setting {name}={err.get('input')!r}: {err['msg']}\n")
        raise SystemExit(2) from None


def front_limits(settings: Settings) -> FrontLimits:
    """The client side's view of the settings."""
    return FrontLimits(
        header_timeout=settings.header_timeout,
        keep_alive_timeout=settings.keep_alive_timeout,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
        max_body_bytes=settings.max_body_bytes,
    )


def main() -> None:
    """Configure logging, then serve on uvloop + httptools (the fastest uvicorn stack)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    assert isinstance(app, LoadBalancerApp)
    front = Front(app, front_limits(settings))
    if settings.workers > 1:
        uvloop.run(serve_with_workers(app, front, settings))
        return
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=front.protocol,  # type: ignore[arg-type]  # our Protocol: proxied requests never become ASGI
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=False,  # we are the edge: no X-Forwarded-* rewriting middleware per request
        server_header=False,  # proxied responses carry the replica's own Server and Date headers
        date_header=False,
        timeout_graceful_shutdown=5,
    )


async def serve_with_workers(app: LoadBalancerApp, front: Front, settings: Settings) -> None:
    """This process owns replicas and health and serves the port; LB_WORKERS - 1 workers share it."""
    shared = bind_reuseport(settings.host, settings.port)
    private = socket.socket()  # where workers send the LB's own paths (the shared port could loop back)
    private.bind(("127.0.0.1", 0))
    owner_address = f"127.0.0.1:{private.getsockname()[1]}"
    server = uvicorn.Server(make_config(app, front, settings, lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[shared, private]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.02)
    if serving.done():
        await serving  # startup failed: uvicorn has logged why
        return
    hub = WorkerHub(app.state.pool, settings.workers, owner_address)
    await hub.start()
    try:
        await serving
    finally:
        await hub.stop()


if __name__ == "__main__":
    main()
