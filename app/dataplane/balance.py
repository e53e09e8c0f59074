"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; HAProxy hash-balance-factor).

A key goes to the first replica in its fallback order whose in-flight count is below
ceil(factor x mean in-flight), at least 1: a hot key spills over to its next replicas instead of piling
onto one, while keys of lightly loaded replicas stay where the ring puts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import ceil
from typing import Protocol

from app.ring.base import Ring


class Loaded(Protocol):
    """Anything that knows how many requests it has in flight (an UpstreamPool)."""

    in_flight: int


def load_cap(total_in_flight: int, replicas: int, factor: float) -> int:
    """A replica takes a new request while it holds fewer than this: factor x the mean, rounded up, >= 1."""
    return max(1, ceil(factor * total_in_flight / replicas))


def pick_bounded(ring: Ring, key: str, home: str, loads: Mapping[str, Loaded], factor: float) -> str:
    """The first replica in `key`'s fallback order (`home` = ring.lookup(key) first) below the cap."""
    cap = load_cap(sum(u.in_flight for u in loads.values()), len(loads), factor)
    if loads[home].in_flight < cap:
        return home  # the common case: no fallback order is computed
    for name in ring.successors(key):
        if loads[name].in_flight < cap:
            return name
    # Unreachable while factor >= 1 (some replica is at or below the mean), but never fail a request.
    return home
