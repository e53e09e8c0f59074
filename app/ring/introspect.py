"""What a ring does, without a request: key shares, point positions, a key's route, what a change moves.

Pure functions over a Ring or a HashStrategy, on one fixed sample of keys shaped like the LB's default keys
(6-digit request ids), so two answers (or an answer and a test) are comparable.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from app.errors import NoReplicasError
from app.ring.base import HashStrategy, Ring
from app.ring.ketama import KetamaRing
from app.ring.slots import SlotRing

SAMPLE_SIZE = 10_000
_SAMPLE_SEED = 20181  # fixed: the sample is part of the API (a plan and a later check use the same keys)


@cache
def sample_keys(size: int = SAMPLE_SIZE) -> tuple[str, ...]:
    """`size` distinct 6-digit ids, the same in every process and run."""
    return tuple(str(i) for i in random.Random(_SAMPLE_SEED).sample(range(100_000, 1_000_000), size))


def assign(ring: Ring, keys: Iterable[str]) -> list[str | None]:
    """Each key's replica, None for every key when the ring is empty."""
    try:
        return [ring.lookup(key) for key in keys]
    except NoReplicasError:
        return [None for _ in keys]


def shares(ring: Ring, keys: Sequence[str]) -> dict[str, float]:
    """Each replica's fraction of `keys` (fractions sum to 1; {} for an empty ring)."""
    counts = Counter(name for name in assign(ring, keys) if name is not None)
    return {name: count / len(keys) for name, count in counts.items()}


def positions(ring: Ring) -> list[tuple[float, str]]:
    """(position in [0, 1), replica) of every virtual node or slot; [] where a strategy has none."""
    if isinstance(ring, KetamaRing | SlotRing):
        return ring.positions()
    return []


def route(ring: Ring, key: str, tries: int) -> tuple[str, list[str]]:
    """The replica the proxy sends `key` to, and the next ones it retries (at most `tries` - 1)."""
    replica = ring.lookup(key)  # raises NoReplicasError on an empty ring
    fallbacks = [name for name in ring.successors(key) if name != replica]
    return replica, fallbacks[: max(0, tries - 1)]


@dataclass(frozen=True)
class Plan:
    """What changing the members from `before` to `after` would do to the sample."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    sample_size: int
    moved: int
    flows: tuple[tuple[str | None, str | None, int], ...]  # (from, to, keys), most keys first


def plan(
    strategy: HashStrategy,
    members: Sequence[str],
    add: Sequence[str],
    remove: Sequence[str],
    keys: Sequence[str],
) -> Plan:
    """Compare the ring over `members` with the ring after the change; ValueError if it is impossible."""
    current = set(members)
    duplicates = [n for n, c in Counter([*add, *remove]).items() if c > 1]
    if duplicates:
        raise ValueError(f"Name '{duplicates[0]}' is given more than once")
    after = (current | set(add)) - set(remove)
    before_of = assign(strategy.build(sorted(current)), keys)
    after_of = assign(strategy.build(sorted(after)), keys)  # ValueError e.g. past a slot ring's capacity
    flows = Counter((b, a) for b, a in zip(before_of, after_of, strict=True) if b != a)
    ordered = sorted(flows.items(), key=lambda item: (-item[1], str(item[0][0]), str(item[0][1])))
    return Plan(
        before=tuple(sorted(current)),
        after=tuple(sorted(after)),
        sample_size=len(keys),
        moved=sum(flows.values()),
        flows=tuple((b, a, n) for (b, a), n in ordered),
    )
