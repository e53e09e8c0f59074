"""Hash strategies: pure code that maps a request key to a replica name.

A strategy builds an immutable Ring once per membership change; the proxy swaps one reference,
so it never sees a half-built ring and needs no lock. Rings know nothing about HTTP or I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, Protocol

from app.errors import NoReplicasError

__all__ = ["HashStrategy", "NoReplicasError", "Ring"]


class Ring(Protocol):
    """An immutable mapping from keys to replica names."""

    def lookup(self, key: str) -> str:
        """Return the replica for `key`; raise NoReplicasError when empty. Hot path: no allocation."""
        ...

    def successors(self, key: str) -> Iterator[str]:
        """Yield distinct replicas in fallback order, starting with lookup(key)."""
        ...


class HashStrategy(Protocol):
    """Builds rings; chosen by name from STRATEGIES."""

    name: ClassVar[str]

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return a ring over `replicas` (order-independent)."""
        ...
