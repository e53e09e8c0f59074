"""The LB's own app (control plane): routers, error handlers, and a lifespan that owns every resource.

It serves the LB's own paths only. Proxied paths are served by the data plane's protocol, which app.launch
wires in front of it (app.state.front); a launch without it (uvicorn's CLI) is refused at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app import native
from app.api.deps import resolve_strategy
from app.api.docs import install_offline_docs
from app.api.error_handlers import install_error_handlers
from app.api.routers import config, dashboard, metrics, readiness, replicas, ring, status
from app.api.routers import proxy as proxy_routes
from app.api.schemas import Failure
from app.control.engine_membership import EngineMembership
from app.control.local_membership import LocalMembership, MembershipPolicy
from app.dataplane.exchange import DataPlane
from app.dataplane.front import Front, ReservedPaths
from app.dataplane.keys import make_key_extractor
from app.metrics import Stats
from app.ring.base import HashStrategy
from app.runtimes import make_runtime
from app.runtimes.engine import EngineRuntime
from app.settings import Settings
from app.voting import routes as vote_routes
from app.voting.store import open_vote_store

logger = logging.getLogger(__name__)

DESCRIPTION = """
Consistent-hashing HTTP load balancer. `/add`, `/rm`, `/rep` manage the replicas; every other path is
proxied to the replica the hash ring picks for the request's key (query parameter `id` by default).
Errors are `{"message": "<Error> ...", "status": "failure"}`.

See it live: the [dashboard](/dashboard) draws the ring and the replicas;
the [voting page](/vote) is the demo app.
"""


def make_membership(settings: Settings, strategy: HashStrategy) -> LocalMembership:
    """Where desired membership lives: in the engine (swarm) or in this LB (process, docker)."""
    runtime = make_runtime(settings)
    policy = MembershipPolicy.from_settings(settings)
    if settings.runtime == "swarm":
        engine = cast(EngineRuntime[Any], runtime)
        return EngineMembership(engine, strategy, policy, resync_interval=settings.swarm_resync_interval)
    return LocalMembership(runtime, strategy, policy)


# Why a launch without the data plane's protocol is refused, in one line (uvicorn adds that it exits).
NOT_SERVED = (
    "this app needs the LB's own HTTP protocol for proxied requests (streaming, limits, WebSocket), which"
    " `uvicorn --factory` cannot load: start it with `python -m app` (or `make run`)"
)


class LoadBalancerApp(FastAPI):
    """FastAPI that refuses to start unless the data plane's protocol serves it (app.launch.build)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and getattr(self.state, "front", None) is None:
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.failed", "message": NOT_SERVED})
            return
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start replicas and the health monitor; on shutdown stop them all (no orphans)."""
    settings: Settings = app.state.settings
    front: Front = app.state.front
    strategy = resolve_strategy(app)
    stats = Stats()
    pool = make_membership(settings, strategy)
    pool.subscribe(lambda table: stats.ring_rebuilt())
    pool.observe_transitions(stats.transition)
    plane = DataPlane(
        pool,
        make_key_extractor(settings.key_source, settings.key_name),
        max_tries=settings.max_tries,
        max_body_bytes=settings.max_body_bytes,
        stats=stats,
        balance_factor=settings.balance_factor,
    )
    app.state.strategy = strategy
    app.state.stats = stats
    app.state.membership = pool
    app.state.votes = open_vote_store(settings)  # early: bad options fail fast (PostgreSQL: no I/O yet)
    # Whether a token is set, never the token itself.
    logger.info("admin token %s", "set: mutations need it" if settings.admin_token else "unset")
    try:
        await pool.start(settings.replicas)
        front.data_plane = plane
        mode = "compiled" if native.STATE.compiled else "Python source"
        logger.info("proxying to the replicas through the data plane (hot path: %s)", mode)
        yield
    finally:
        front.data_plane = None
        await pool.close()
        await app.state.votes.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the LB's own app; `settings` defaults to the environment (LB_* variables).

    Serve it with app.launch (`python -m app`), which puts the data plane in front of it.
    """
    settings = settings or Settings()
    app = LoadBalancerApp(
        title="Consistent-hashing load balancer",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # replaced by install_offline_docs: no CDN
        redoc_url=None,
        # The client side's limits answer on every path, before any route (app.dataplane.server).
        responses={431: {"model": Failure, "description": "Request line + headers over LB_MAX_HEADER_BYTES"}},
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_offline_docs(app)
    control_routers = [
        replicas.router,
        ring.router,
        status.router,
        readiness.router,
        config.router,
        metrics.router,
        dashboard.router,
        vote_routes.router,
    ]
    for router in control_routers:
        app.include_router(router)
    vote_routes.mount_static(app)
    app.include_router(proxy_routes.router)  # the catch-all: LAST
    # FastAPI wraps included routers lazily, so read the paths from the routers themselves.
    reserved = ReservedPaths.of_routes([*app.routes, *(route for r in control_routers for route in r.routes)])
    app.state.is_reserved = reserved
    return app
