"""WebSocket (Upgrade) passthrough: messages both ways, stickiness by key, replica death closes the client."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import echo_command
from tests.lb_support import RunningLB, replica_pids, start_lb


@pytest.fixture
def ws_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    running = start_lb(tmp_path_factory.mktemp("ws"), replicas="3", replica_command=echo_command())
    yield running
    running.stop()


def open_ws(lb: RunningLB, key: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{lb.port}/ws?id={key}", open_timeout=10, close_timeout=2)


def test_messages_flow_both_ways(ws_lb: RunningLB) -> None:
    with open_ws(ws_lb, "room-1") as ws:
        assert ws.recv(timeout=10) in ws_lb.replicas()
        for k in range(20):
            ws.send(f"text {k}")
            assert ws.recv(timeout=10) == f"text {k}"
        ws.send(b"\x00\x01" * 40_000)  # larger than one read, binary
        assert ws.recv(timeout=10) == b"\x00\x01" * 40_000
    assert ws_lb.client.get("/home").status_code == 200


def test_connections_with_the_same_key_reach_the_same_replica(ws_lb: RunningLB) -> None:
    for room in ("alpha", "beta", "gamma"):
        with open_ws(ws_lb, room) as first, open_ws(ws_lb, room) as second:
            name = first.recv(timeout=10)
            assert second.recv(timeout=10) == name
            assert ws_lb.serving(room) == name  # and plain HTTP with the same key agrees


def test_killing_the_replica_closes_the_client_socket(ws_lb: RunningLB) -> None:
    with open_ws(ws_lb, "doomed") as ws:
        name = ws.recv(timeout=10)
        assert isinstance(name, str)
        os.kill(replica_pids(ws_lb)[name], signal.SIGKILL)
        with pytest.raises(ConnectionClosed):
            for _ in range(100):  # bounded: the close must come well before this runs out
                ws.recv(timeout=10)
