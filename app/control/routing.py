"""The routing table the data plane reads: one immutable object, swapped whole on every change."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.ring.base import HashStrategy, Ring
from app.upstream.pool import UpstreamPool


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """What the proxy needs per request: the ring over UP members and their connection pools."""

    ring: Ring
    upstreams: dict[str, UpstreamPool]


class RoutingTableHolder:
    """Builds tables with the strategy and tells subscribers (e.g. data-plane workers) of each swap.

    The proxy reads `table` (one attribute), so it never sees a half-built ring and takes no lock.
    """

    def __init__(self, strategy: HashStrategy) -> None:
        self.strategy = strategy
        self.table = RoutingTable(strategy.build([]), {})
        self._subscribers: list[Callable[[RoutingTable], object]] = []

    def rebuild(self, up: Mapping[str, UpstreamPool]) -> None:
        """Swap in a table over exactly the `up` members."""
        self.table = RoutingTable(self.strategy.build(list(up)), dict(up))
        for callback in self._subscribers:
            callback(self.table)

    def subscribe(self, callback: Callable[[RoutingTable], object]) -> None:
        """Call `callback(table)` after every swap, on the event loop."""
        self._subscribers.append(callback)
