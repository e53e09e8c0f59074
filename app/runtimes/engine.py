"""What a runtime whose engine holds membership (Swarm; Kubernetes would be another) offers on top of
Runtime: a listing of the replicas the engine runs for this cluster, and a signal when that may change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.runtimes.base import HandleT, Runtime


@dataclass(frozen=True)
class TaskView:
    """The engine's view of a replica's current task (what /status shows next to the LB's own view)."""

    state: str  # the engine's task state: new, pending, starting, running, failed, shutdown, ...
    desired_state: str
    message: str | None = None  # the engine's error, or its status message
    container: str | None = None  # short id of the task's container, when it has one
    updated_at: str | None = None


class EngineRuntime(Runtime[HandleT], Protocol[HandleT]):
    """A runtime that also lists and watches the engine's replicas of this cluster."""

    # Called on the event loop when the engine reports something that may change the listing (a service
    # created, updated or removed; a task's container started or died). It must not block.
    on_change: Callable[[], object] | None

    async def watch(self) -> None:
        """Subscribe to the engine's events (before the first listing, so no change falls between)."""
        ...

    async def list_replicas(self) -> dict[str, tuple[HandleT, TaskView | None]]:
        """Every replica of this cluster the engine runs now, by name; the same handle object each time
        for the same instance (a new object means a new instance under that name)."""
        ...
