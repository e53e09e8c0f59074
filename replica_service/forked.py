"""Start a replica in a process forked from a warm fork server (multiprocessing "forkserver").

The fork server imports FastAPI and uvicorn once; each replica is then a fork that only builds its app
and serves, so a replacement answers in tens of milliseconds instead of the ~1 s a cold interpreter
needs to import FastAPI.
"""

from __future__ import annotations

import os
import signal
import socket

import uvicorn

from replica_service.app import create_app
from replica_service.lifeline import die_with_parent


def serve(server_id: str, sock: socket.socket) -> None:
    """Child entry point: die with the fork server (which dies with the LB), then serve on `sock`."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the fork server's own handler
    fork_server = os.environ.get("CHLB_FORKSERVER_PID")
    die_with_parent(int(fork_server) if fork_server else None)
    os.setsid()  # Ctrl-C at the terminal reaches the LB only; it stops replicas in order
    os.environ["SERVER_ID"] = server_id
    config = uvicorn.Config(create_app(server_id), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
