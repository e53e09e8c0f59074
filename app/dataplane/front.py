"""Send non-control requests straight to the proxy, before FastAPI's middleware and routing.

FastAPI's per-request routing costs more than nginx's whole request (a profile under `make bench`), so
only reserved paths (the LB's own routes, derived from the app) go through it. The catch-all route
stays registered, so /docs documents the proxy and the behaviour is identical with this off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from app.dataplane.limits import limit_body

if TYPE_CHECKING:
    from app.dataplane.exchange import DataPlane

CATCH_ALL = "/{path:path}"
DEFAULT_CONTROL_BODY_BYTES = 64 * 1024


class ReservedPaths:
    """Paths the LB serves itself: exact routes plus mount prefixes (e.g. /static/)."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for route in routes:
            if isinstance(route, Mount):
                prefixes.append(route.path.rstrip("/") + "/")
            elif isinstance(path := getattr(route, "path", None), str) and path != CATCH_ALL:
                exact.add(path)  # Route, APIRoute, WebSocketRoute: anything with a path
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def __call__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.exact) + [p + "*" for p in self.prefixes])


class LoadBalancerApp(FastAPI):
    """FastAPI with a fast path in front: proxied paths skip the middleware stack and routing entirely.

    Overriding __call__ (rather than adding middleware) keeps the data path one Python call away from
    uvicorn: Starlette's ServerErrorMiddleware would otherwise wrap every `send`.
    """

    fast_proxy: ASGIApp | None = None  # set by the lifespan when the fast path is enabled
    data_plane: DataPlane | None = None  # the same, for the protocol-level server (app.dataplane.server)
    is_reserved: Callable[[str], bool] = staticmethod(lambda path: True)
    max_control_body_bytes = DEFAULT_CONTROL_BODY_BYTES  # bodies to the LB's own paths (/add, /api/vote)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not self.is_reserved(scope["path"]):
                proxy = self.fast_proxy
                if proxy is not None:
                    await proxy(scope, receive, send)
                    return
            else:  # the proxy limits its own bodies; the LB's paths get the (much smaller) control limit
                limited = await limit_body(scope, receive, send, self.max_control_body_bytes)
                if limited is None:
                    return
                receive = limited
        await super().__call__(scope, receive, send)
