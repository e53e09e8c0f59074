"""The seam for where desired membership lives.

The LB holds it itself for the process and Docker runtimes (app.control.local_membership.LocalMembership);
an engine that holds membership (a Swarm service list, a Kubernetes API server) plugs in here with an
implementation that watches the engine instead. The API and the data plane depend only on this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from app.control.lifecycle import DrainWaiter, Replica, State
from app.control.routing import RoutingTable
from app.ring.base import HashStrategy
from app.runtimes.engine import TaskView

if TYPE_CHECKING:
    from app.control.local_membership import MembershipPolicy


class Membership(Protocol):
    """Desired replicas, their lifecycle owners and the routing table over the healthy ones."""

    strategy: HashStrategy
    drain_waiter: DrainWaiter | None  # set by the worker hub (LB_WORKERS > 1): removals wait for workers too

    @property
    def table(self) -> RoutingTable:
        """The current routing table (one attribute read; swapped whole on every change)."""
        ...

    def names(self) -> list[str]:
        """Desired members in natural order (what /rep shows, whatever their health)."""
        ...

    def replicas(self) -> list[Replica[Any]]:
        """Every member the LB still manages, leaving ones (draining) included, in natural order."""
        ...

    def task(self, name: str) -> TaskView | None:
        """The engine's view of `name`'s current task where an engine holds membership; else None."""
        ...

    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Add `n` members (given names first); all or nothing; returns the names added."""
        ...

    async def remove(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Remove `n` members (given names first); returns the names removed."""
        ...

    def report_failure(self, name: str, reason: str) -> None:
        """The data plane could not reach `name`."""
        ...

    def subscribe(self, callback: Callable[[RoutingTable], object]) -> None:
        """Call `callback(table)` after every routing-table swap."""
        ...

    def observe_transitions(self, callback: Callable[[str, State], object]) -> None:
        """Call `callback(name, state)` on every lifecycle transition of every member."""
        ...

    def retune(self, policy: MembershipPolicy) -> None:
        """Timeouts, rise/fall, back-off, probe schedule and member limit from now on (a reload)."""
        ...

    async def use_strategy(self, strategy: HashStrategy) -> None:
        """Rebuild the ring with `strategy` over the same replicas; ValueError if it cannot hold them."""
        ...

    async def start(self, initial: int) -> None:
        """Reach `initial` members (adopting what the runtime already runs) and start health checks."""
        ...

    async def close(self) -> None:
        """Stop health checks and every member (LB shutdown)."""
        ...
