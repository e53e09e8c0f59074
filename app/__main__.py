"""`python -m app`: run the LB with settings from the environment (LB_* variables)."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from app.dataplane.coalesce import CoalescingHttpToolsProtocol
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


logger = logging.getLogger(__name__)


def where_to_look(settings: Settings) -> str:
    """The pages to open, for the start-up log (`make run` users look there first)."""
    host = "localhost" if settings.host in ("", "0.0.0.0", "::") else settings.host
    base = f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"
    return f"dashboard {base}/dashboard | voting page {base}/vote | API docs {base}/docs"


def main() -> None:
    """Configure logging, then serve on uvloop + httptools (the fastest uvicorn stack)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.info("open %s", where_to_look(settings))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, one write per response
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=False,  # we are the edge: no X-Forwarded-* rewriting middleware per request
        server_header=False,  # proxied responses carry the replica's own Server and Date headers
        date_header=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
