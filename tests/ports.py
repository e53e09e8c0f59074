"""Loopback sockets for test servers: bound here and handed over, so no other process can take the port
between choosing it and listening on it."""

from __future__ import annotations

import socket


def bind_loopback(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a free port on `host` (not yet listening); the caller owns it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def port_of(sock: socket.socket) -> int:
    """The port a bound socket holds."""
    return int(sock.getsockname()[1])


def free_port() -> int:
    """A port nobody listens on right now, for a server we cannot hand a socket to (e.g. a port that
    docker compose publishes); everything else gets a bound socket from bind_loopback()."""
    with bind_loopback() as sock:
        return port_of(sock)
