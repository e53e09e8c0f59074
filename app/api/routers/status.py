"""The LB's own health and per-replica state."""

from __future__ import annotations

import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import PoolDep, StatsDep, StrategyDep
from app.control.engine_membership import EngineMembership
from app.control.lifecycle import State


class TaskStatus(BaseModel):
    """The engine's view of a replica's current task (swarm runtime)."""

    state: str = Field(description="the engine's task state: pending, starting, running, failed, ...")
    desired_state: str
    message: str | None
    container: str | None = Field(description="short id of the task's container")
    updated_at: str | None


class ReplicaStatus(BaseModel):
    """What the LB knows about one replica."""

    name: str
    address: str | None
    pid: int | None = Field(None, description="process id (process backend)")
    state: State
    on_ring: bool
    consecutive_failures: int
    in_flight: int = Field(description="requests sent to it and not yet answered (drain waits for 0)")
    last_probe: float | None
    restarts: int
    failed_starts: int
    retry_in: float | None
    last_error: str | None
    task: TaskStatus | None = Field(None, description="the engine's view of its task (swarm runtime)")
    requests: int = Field(description="requests proxied to it since the LB started (under this name)")
    latency_p99_ms: float | None = Field(description="p99 upstream latency of its last 1,024 requests")


class StatusResponse(BaseModel):
    """Every desired replica and the hashing in use."""

    strategy: str
    replicas: list[ReplicaStatus]
    status: str = "successful"


router = APIRouter(tags=["status"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness of the LB itself (not of the replicas)."""
    return {"status": "successful"}


@router.get("/status", response_model=StatusResponse)
async def replica_status(pool: PoolDep, strategy: StrategyDep, stats: StatsDep) -> StatusResponse:
    """Per-replica health: state, consecutive failures, last probe (Unix time), restarts, back-off."""
    now = time.monotonic()
    on_ring = pool.table.upstreams
    tasks = pool.tasks if isinstance(pool, EngineMembership) else {}
    members = pool.replicas()
    counters = {m.name: stats.replica(m.name) for m in members}
    rows = [
        ReplicaStatus(
            name=m.name,
            address=m.handle.address if m.handle else None,
            pid=m.handle.pid if m.handle else None,
            state=m.state,
            on_ring=m.name in on_ring,
            consecutive_failures=m.fails,
            in_flight=m.upstream.in_flight if m.upstream else 0,
            last_probe=m.last_probe,
            restarts=m.restarts,
            failed_starts=m.attempts,
            retry_in=round(m.next_start - now, 3)
            if m.state is State.BACKOFF and m.next_start > now
            else None,
            last_error=m.last_error,
            task=TaskStatus.model_validate(view, from_attributes=True)
            if (view := tasks.get(m.name)) is not None
            else None,
            requests=counters[m.name].requests,
            latency_p99_ms=_ms(counters[m.name].latency_p99()),
        )
        for m in members
    ]
    return StatusResponse(strategy=strategy.name, replicas=rows)
