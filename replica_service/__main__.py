"""Run a replica: `python -m replica_service --port 8001` (or `--fd N` with a socket bound by the LB)."""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn

from replica_service.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("REPLICA_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("REPLICA_PORT", "5000")))
    parser.add_argument("--fd", type=int, default=None, help="serve on an inherited, bound socket")
    parser.add_argument("--server-id", default=None, help="overrides $SERVER_ID")
    args = parser.parse_args(argv)
    app = create_app(args.server_id)
    if args.fd is not None:
        # Not uvicorn's --fd: it wraps the fd as AF_UNIX, so accepted TCP connections miss TCP_NODELAY
        # and every response waits ~40 ms for a delayed ACK. socket(fileno=) detects the real family.
        sock = socket.socket(fileno=args.fd)
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    else:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
