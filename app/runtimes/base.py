"""The orchestrator interface: the one seam between the LB and where replicas run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(eq=False)
class ReplicaHandle:
    """A started replica: its name, where the LB reaches it, and the backend's own reference."""

    name: str
    host: str
    port: int
    ref: object = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Orchestrator(Protocol):
    """Starts replicas by name. Implementations must be safe to call from the event loop."""

    kind: str
    name_prefix: str  # generated names are f"{name_prefix}{n}"
    # Called on the event loop when the backend learns a replica died (e.g. Docker's `die` event),
    # so the pool can react before the next heartbeat. Backends without such events never call it.
    on_exit: Callable[[ReplicaHandle], object] | None

    def check_name(self, name: str) -> None:
        """Raise InvalidRequestError when `name` cannot name a replica on this backend."""
        ...

    async def start(self, name: str) -> ReplicaHandle:
        """Start a replica called `name` and return how to reach it (it may not be serving yet)."""
        ...

    async def stop(self, handle: ReplicaHandle) -> None:
        """Stop the replica and release its resources; idempotent."""
        ...

    def exited(self, handle: ReplicaHandle) -> bool:
        """True when the replica is known to be gone (cheap, no I/O): lets start-up fail fast."""
        ...

    async def adopt(self) -> list[ReplicaHandle]:
        """Replicas left running by an earlier LB that this one takes over (none for processes)."""
        ...

    async def close(self) -> None:
        """Stop every replica this orchestrator started (on LB shutdown)."""
        ...
