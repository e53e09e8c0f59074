"""A test replica whose starts fail while a countdown file says so, so a killed replica stays down a while.

`python -m tests.flaky_replica --fd N --fail-file PATH`: when PATH holds a number above 0, decrement it and
exit 1 (a failed start: the LB backs off and retries); otherwise serve like tests/echo_replica.py.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import uvicorn

from tests.echo_replica import app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--fail-file", type=Path, required=True)
    args = parser.parse_args()
    try:
        left = int(args.fail_file.read_text())
    except (OSError, ValueError):
        left = 0
    if left > 0:
        args.fail_file.write_text(str(left - 1))
        sys.exit(1)
    sock = socket.socket(fileno=args.fd)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
