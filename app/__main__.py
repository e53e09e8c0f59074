"""`python -m app`: run the LB with settings from the environment (LB_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from app.dataplane.front import LoadBalancerApp
from app.dataplane.server import Front, FrontLimits
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


if __name__ == "__main__":
    main()
