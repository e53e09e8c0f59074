"""`python -m app`: run the LB with settings from the environment (LB_* variables)."""

from __future__ import annotations

import logging

import uvicorn

from app.coalesce import CoalescingHttpToolsProtocol
from app.main import create_app
from app.settings import Settings


def main() -> None:
    """Configure logging, then serve on uvloop + httptools (the fastest uvicorn stack)."""
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, one write per response
        log_config=None,
        access_log=False,
        proxy_headers=False,  # we are the edge: no X-Forwarded-* rewriting middleware per request
        server_header=False,  # proxied responses carry the replica's own Server and Date headers
        date_header=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
