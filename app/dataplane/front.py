"""What every client connection of one LB process shares: limits, the reserved paths, the data plane.

Every process of the LB serves its port through this: `python -m app` (app.launch) and each worker build
one Front and hand `make_config(app, front, ...)` (app.dataplane.server) to uvicorn, so every proxied
request goes through the same exchange.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Mount

from app.dataplane.access_log import AccessLog, make_access_log
from app.dataplane.http1 import error_response
from app.dataplane.keys import make_key_extractor
from app.dataplane.replies import failure_body

if TYPE_CHECKING:
    from app.dataplane.exchange import DataPlane
    from app.settings import Settings

CATCH_ALL = "/{path:path}"


class ReservedPaths:
    """Paths the LB serves itself: exact routes plus mount prefixes (e.g. /static/)."""

    def __init__(self, exact: Iterable[str], prefixes: Iterable[str] = ()) -> None:
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    @classmethod
    def of_routes(cls, routes: Iterable[BaseRoute]) -> ReservedPaths:
        """The paths of an app's routes, the catch-all proxy route excepted."""
        exact: set[str] = set()
        prefixes: list[str] = []
        for route in routes:
            if isinstance(route, Mount):
                prefixes.append(route.path.rstrip("/") + "/")
            elif isinstance(path := getattr(route, "path", None), str) and path != CATCH_ALL:
                exact.add(path)  # Route, APIRoute, WebSocketRoute: anything with a path
        return cls(exact, prefixes)

    def __call__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.exact) + [p + "*" for p in self.prefixes])


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """Client-side limits: each field is the LB_* setting of the same name (defaults live there)."""

    header_timeout: float
    keep_alive_timeout: float
    body_timeout: float
    send_timeout: float
    max_header_bytes: int
    max_connections: int
    max_body_bytes: int
    max_control_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontLimits:
        """The client side's view of the settings."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class Front:
    """The limits, who serves which path, and the canned answers every client connection shares."""

    def __init__(
        self,
        limits: FrontLimits,
        is_reserved: Callable[[str], bool],
        *,
        owner: DataPlane | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self.limits = limits
        self.is_reserved = is_reserved  # the LB's own paths: to its app (or, in a worker, to the owner)
        # Proxied paths: set once the replicas are up (the lifespan, or a worker's first routing table).
        self.data_plane: DataPlane | None = None
        self.owner = owner  # in a worker process: the LB's own paths are proxied to the owner process
        self.access_log = access_log  # None: no line per request (LB_ACCESS_LOG=false)
        # The owner's private port, where workers forward the LB's own paths: they log those requests
        # (with the real client), so the owner does not log them a second time.
        self.unlogged_port: int | None = None
        self.https_port: int | None = None  # LB_HTTPS_REDIRECT: plain HTTP answers 308 to this port
        self.too_many = error_response(503, failure_body("Too many connections"), close=True)
        self.header_timeout = error_response(408, failure_body("Request header timeout"), close=True)
        self.body_timeout = error_response(408, failure_body("Request body timeout"), close=True)
        self.malformed = error_response(400, failure_body("Malformed HTTP request"), close=True)
        self.header_too_large = error_response(431, failure_body("Request header too large"), close=True)

    def reconfigure(self, settings: Settings) -> None:
        """A reload, in every process of the LB: client limits, the data plane's knobs, the log level.

        Connections read the limits and the access log per request, so the next request on every open
        connection already has the new ones; nothing is closed.
        """
        logging.getLogger().setLevel(settings.log_level.upper())
        self.limits = FrontLimits.from_settings(settings)
        if (self.access_log is not None) != settings.access_log:
            self.access_log = make_access_log(settings.access_log)
        plane = self.data_plane
        if plane is not None:
            plane.extract_key = make_key_extractor(settings.key_source, settings.key_name)
            plane.max_tries = settings.max_tries
            plane.balance_factor = settings.balance_factor
            plane.limit_bodies(settings.max_body_bytes)
        if self.owner is not None:  # a worker: the LB's own paths go to the owner, with their own limit
            self.owner.limit_bodies(settings.max_control_body_bytes)
