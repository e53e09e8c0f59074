"""The LB's own health and per-replica state."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app import native
from app.api.deps import HubDep, MembershipDep, ProcessStatsDep, StatsDep, StrategyDep
from app.control.lifecycle import Replica, State
from app.metrics import Stats, WorkerStats

if TYPE_CHECKING:
    from app.dataplane.hub import WorkerHub  # typing only: the API does not import the data plane


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
    pid: int | None = Field(None, description="process id (process runtime)")
    state: State
    on_ring: bool
    consecutive_failures: int
    in_flight: int = Field(description="requests sent to it and not yet answered (drain waits for 0)")
    last_probe: float | None
    restarts: int
    failed_starts: int
    retry_in: float | None
    last_error: str | None
    last_error_at: float | None = Field(
        None, description="when last_error happened (Unix time, like last_probe); null with no last_error"
    )
    task: TaskStatus | None = Field(None, description="the engine's view of its task (swarm runtime)")
    requests: int = Field(description="requests proxied to it since the LB started (under this name)")
    latency_p99_ms: float | None = Field(description="p99 upstream latency of its last 1,024 requests")


class WorkerStatus(BaseModel):
    """One data-plane process serving the LB's port (LB_WORKERS)."""

    index: int = Field(description="0: the owner (replicas, health, the LB's own paths); 1..N-1: workers")
    pid: int | None = Field(description="null while a dead worker waits out its restart back-off")
    restarts: int = Field(description="times the worker was restarted after its process died")
    requests: int = Field(
        description="requests its current process proxied (a worker's as it last reported them)"
    )


class TlsStatus(BaseModel):
    """The HTTPS listener (LB_TLS_CERT and LB_TLS_KEY set)."""

    port: int
    protocols: list[str] = Field(description="offered by ALPN, preferred first")
    hosts: list[str] = Field(description="server names with their own certificate (LB_TLS_CERTS_DIR)")


class StatusResponse(BaseModel):
    """Every desired replica, the hashing in use, and the data-plane processes."""

    strategy: str
    replicas: list[ReplicaStatus]
    workers: list[WorkerStatus]
    compiled: bool = Field(description="whether the hot path runs compiled (the start-up log says why not)")
    tls: TlsStatus | None = Field(None, description="the HTTPS listener; null: plain HTTP only")
    config_loaded_at: float | None = Field(
        None, description="when the configuration was last loaded: the start, or the last reload (Unix time)"
    )
    status: str = "successful"


router = APIRouter(tags=["status"])


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness of the LB itself (not of the replicas)."""
    return {"status": "successful"}


def in_flight(member: Replica[Any], workers: WorkerStats | None) -> int:
    """Requests to `member` not yet answered: the owner's, plus the workers' as they last reported."""
    own = member.upstream.in_flight if member.upstream else 0
    return own + (workers.in_flight(member.name) if workers is not None else 0)


def worker_rows(own: Stats, hub: WorkerHub | None) -> list[WorkerStatus]:
    """The owner, then each worker process with the counters it last sent."""
    rows = [WorkerStatus(index=0, pid=os.getpid(), restarts=0, requests=own.proxied())]
    if hub is None:
        return rows
    for worker in hub.workers:
        snapshot = hub.stats.live.get(worker.pid) if worker.pid is not None else None
        requests = snapshot.proxied() if snapshot is not None else 0
        rows.append(
            WorkerStatus(index=worker.index, pid=worker.pid, restarts=worker.restarts, requests=requests)
        )
    return rows


@router.get("/status", response_model=StatusResponse)
async def replica_status(
    membership: MembershipDep,
    strategy: StrategyDep,
    stats: StatsDep,
    own: ProcessStatsDep,
    hub: HubDep,
    request: Request,
) -> StatusResponse:
    """Per replica: state, consecutive failures, last probe (Unix time), restarts, back-off, last error
    and when it happened (last_error_at, Unix time); the processes."""
    now = time.monotonic()
    on_ring = membership.table.upstreams
    members = membership.replicas()
    counters = {m.name: stats.replica(m.name) for m in members}
    rows = [
        ReplicaStatus(
            name=m.name,
            address=m.handle.address if m.handle else None,
            pid=m.handle.pid if m.handle else None,
            state=m.state,
            on_ring=m.name in on_ring,
            consecutive_failures=m.fails,
            in_flight=in_flight(m, hub.stats if hub else None),
            last_probe=m.last_probe,
            restarts=m.restarts,
            failed_starts=m.attempts,
            retry_in=round(m.next_start - now, 3)
            if m.state is State.BACKOFF and m.next_start > now
            else None,
            last_error=m.last_error,
            last_error_at=m.last_error_at,
            task=TaskStatus.model_validate(view, from_attributes=True)
            if (view := membership.task(m.name)) is not None
            else None,
            requests=counters[m.name].requests,
            latency_p99_ms=_ms(counters[m.name].latency_p99()),
        )
        for m in members
    ]
    return StatusResponse(
        strategy=strategy.name,
        replicas=rows,
        workers=worker_rows(own, hub),
        compiled=native.STATE.compiled,
        tls=TlsStatus.model_validate(tls, from_attributes=True)
        if (tls := getattr(request.app.state, "tls", None)) is not None
        else None,
        config_loaded_at=getattr(getattr(request.app.state, "reloader", None), "loaded_at", None),
    )
