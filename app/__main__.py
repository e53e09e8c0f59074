"""`python -m app`: run the LB with settings from the environment (LB_* variables)."""

from __future__ import annotations

import logging
import socket
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
            name = "_".join(str(part) for part in err["loc"]).upper()
            name = name if name.startswith("LB_") else f"LB_{name}"  # aliases are full names already
            sys.stderr.write(f"invalid setting {name}={err.get('input')!r}: {err['msg']}\n")
        raise SystemExit(2) from None


logger = logging.getLogger(__name__)


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
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        sys.stderr.write(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}\n")
        raise SystemExit(2) from None
    return sock


def main() -> None:
    """Configure logging, then serve on uvloop + httptools (the fastest uvicorn stack)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sock = listening_socket(settings)
    host, port = sock.getsockname()[:2]  # the real port, also when the socket was inherited (LB_FD)
    logger.info("open %s", where_to_look(host, port))
    config = uvicorn.Config(
        create_app(settings),
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,  # httptools, one write per response
        log_config=None,
        access_log=settings.access_log,
        proxy_headers=False,  # we are the edge: no X-Forwarded-* rewriting middleware per request
        server_header=False,  # proxied responses carry the replica's own Server and Date headers
        date_header=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
