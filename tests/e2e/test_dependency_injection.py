"""The hash strategy is a FastAPI dependency: a test swaps it with dependency_overrides."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from fastapi import FastAPI

from app.api.deps import get_strategy
from app.errors import NoReplicasError
from app.settings import Settings
from tests.inprocess_lb import serve_in_process


class LastReplicaRing:
    """Every key goes to the last replica in sorted order."""

    def __init__(self, replicas: Sequence[str]) -> None:
        self.order = sorted(replicas, reverse=True)

    def lookup(self, key: str) -> str:
        if not self.order:
            raise NoReplicasError("No replicas available")
        return self.order[0]

    def successors(self, key: str) -> Iterator[str]:
        return iter(self.order)


class LastReplica:
    name: ClassVar[str] = "last-replica"

    def build(self, replicas: Sequence[str]) -> LastReplicaRing:
        return LastReplicaRing(replicas)


def test_overridden_strategy_routes_every_key_and_shows_in_status(tmp_path: Path) -> None:
    settings = Settings(replicas=3, db_path=tmp_path / "v.db", heartbeat_interval=0.05, _env_file=None)

    def override(app: FastAPI) -> None:
        app.dependency_overrides[get_strategy] = LastReplica

    with serve_in_process(settings, override) as client:
        served = {client.get("/home", params={"id": str(k)}).json()["message"] for k in range(30)}
        assert served == {"Hello from Server: Server 3"}
        assert client.get("/status").json()["strategy"] == "last-replica"
        client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["Server 3"]}).raise_for_status()
        assert client.get("/home", params={"id": "1"}).json()["message"] == "Hello from Server: Server 2"
