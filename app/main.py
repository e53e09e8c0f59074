"""The app factory: routers, error handlers, and a lifespan that owns every resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI

from app.api.deps import resolve_strategy
from app.api.docs import install_offline_docs
from app.api.error_handlers import install_error_handlers
from app.api.routers import dashboard, metrics, replicas, ring, status
from app.api.routers import proxy as proxy_routes
from app.api.schemas import Failure
from app.control.engine_membership import EngineMembership
from app.control.pool import PoolPolicy, ReplicaPool
from app.dataplane.exchange import DataPlane
from app.dataplane.front import LoadBalancerApp, ReservedPaths
from app.dataplane.keys import make_key_extractor
from app.dataplane.proxy import Proxy
from app.metrics import Stats
from app.ring.base import HashStrategy
from app.runtimes import make_runtime
from app.runtimes.engine import EngineRuntime
from app.settings import Settings
from app.voting import routes as vote_routes
from app.voting.store import VoteStore

logger = logging.getLogger(__name__)

DESCRIPTION = """
Consistent-hashing HTTP load balancer. `/add`, `/rm`, `/rep` manage the replicas; every other path is
proxied to the replica the hash ring picks for the request's key (query parameter `id` by default).
Errors are `{"message": "<Error> ...", "status": "failure"}`.

See it live: the [dashboard](/dashboard) draws the ring and the replicas;
the [voting page](/vote) is the demo app.
"""


def make_membership(settings: Settings, strategy: HashStrategy) -> ReplicaPool:
    """Where desired membership lives: in the engine (swarm) or in this LB (process, docker)."""
    runtime = make_runtime(settings)
    policy = PoolPolicy.from_settings(settings)
    if settings.runtime == "swarm":
        engine = cast(EngineRuntime[Any], runtime)
        return EngineMembership(engine, strategy, policy, resync_interval=settings.swarm_resync_interval)
    return ReplicaPool(runtime, strategy, policy)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start replicas and the health monitor; on shutdown stop them all (no orphans)."""
    settings: Settings = app.state.settings
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
    proxy = Proxy(plane)
    app.state.strategy = strategy
    app.state.stats = stats
    app.state.pool = pool
    app.state.proxy = proxy
    app.state.votes = VoteStore(settings.db_path, settings.vote_options)  # early: bad options fail fast
    # Whether a token is set, never the token itself.
    logger.info("admin token %s", "set: mutations need it" if settings.admin_token else "unset")
    try:
        await pool.start(settings.replicas)
        if settings.fast_path and isinstance(app, LoadBalancerApp):
            app.fast_proxy = proxy
            app.data_plane = plane
        yield
    finally:
        if isinstance(app, LoadBalancerApp):
            app.fast_proxy = None
            app.data_plane = None
        await pool.close()
        app.state.votes.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the LB; `settings` defaults to the environment (LB_* variables)."""
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
    app.max_control_body_bytes = settings.max_control_body_bytes
    install_error_handlers(app)
    install_offline_docs(app)
    control_routers = [
        replicas.router,
        ring.router,
        status.router,
        metrics.router,
        dashboard.router,
        vote_routes.router,
    ]
    for router in control_routers:
        app.include_router(router)
    vote_routes.mount_static(app)
    app.include_router(proxy_routes.router)  # the catch-all: LAST
    # FastAPI wraps included routers lazily, so read the paths from the routers themselves.
    reserved = ReservedPaths([*app.routes, *(route for r in control_routers for route in r.routes)])
    app.is_reserved = reserved
    app.state.is_reserved = reserved
    return app
