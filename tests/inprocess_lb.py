"""The real LB served in this process (a daemon thread), wired by app.launch exactly as `python -m app` is.

For tests that change the app before it serves (dependency overrides): proxied requests go through the
same data plane as in every other launch. `TestClient(app)` on a built app reaches the LB's own paths.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from app.dataplane.server import make_config
from app.launch import build
from app.settings import Settings
from tests.polling import wait_until
from tests.ports import bind_loopback, port_of


@contextmanager
def serve_in_process(
    settings: Settings, prepare: Callable[[FastAPI], object] = lambda app: None
) -> Iterator[httpx.Client]:
    """Build the LB, let `prepare` change its app, serve it on a free loopback port; yield a client."""
    app, front = build(settings)
    prepare(app)
    server = uvicorn.Server(make_config(app, front, lifespan="on", access_log=False))
    sock = bind_loopback()
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=30)
        assert server.started, "the LB did not start (its log says why)"
        with httpx.Client(base_url=f"http://127.0.0.1:{port_of(sock)}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
