"""The runtime interface: the one seam between the control plane and where replicas run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(eq=False)
class ReplicaHandle:
    """A started replica: its name and where the LB reaches it. Each runtime subclasses it."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The replica's process id where the runtime knows one (shown by /status)."""
        return None


HandleT = TypeVar("HandleT", bound=ReplicaHandle)


class Runtime(Protocol[HandleT]):
    """Starts replicas by name. Implementations must be safe to call from the event loop."""

    kind: str
    name_prefix: str  # generated names are f"{name_prefix}{n}"
    # Called on the event loop as soon as the runtime learns a replica died (a process exit, Docker's
    # `die` event), so its owner can replace it before a heartbeat would notice. Never called for
    # replicas stopped through stop() or close().
    on_exit: Callable[[HandleT], object] | None

    def check_name(self, name: str) -> None:
        """Raise InvalidRequestError when `name` cannot name a replica on this runtime."""
        ...

    async def start(self, name: str) -> HandleT:
        """Start a replica called `name` and return how to reach it (it may not be serving yet)."""
        ...

    async def stop(self, handle: HandleT) -> None:
        """Stop the replica and release its resources; idempotent."""
        ...

    def exited(self, handle: HandleT) -> bool:
        """True when the replica is known to be gone (cheap, no I/O): lets start-up fail fast."""
        ...

    async def adopt(self) -> list[HandleT]:
        """Replicas left running by an earlier LB that this one takes over (none for processes)."""
        ...

    async def close(self) -> None:
        """Stop every replica this runtime started (on LB shutdown)."""
        ...
