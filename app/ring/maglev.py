"""Maglev hashing (Eisenbud et al., NSDI 2016): a prime-sized table filled from per-replica permutations."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from hashlib import md5
from typing import ClassVar

from app.ring.base import Ring
from app.ring.hashing import EmptyRing, hash64, members
from app.ring.rendezvous import rank, score_key, seed_of

TABLE_SIZE = 65537  # prime, so every skip in 1..M-1 makes a full permutation


def is_prime(n: int) -> bool:
    """Trial division; table sizes are small and checked once per strategy."""
    if n < 2:
        return False
    return all(n % d for d in range(2, int(n**0.5) + 1))


def populate(names: Sequence[str], size: int) -> list[str]:
    """Fill the table: replicas take turns claiming their next preferred free entry."""
    offsets: list[int] = []
    skips: list[int] = []
    for name in names:
        digest = md5(name.encode()).digest()
        # Two independent hashes of the name: the digest's two halves.
        offsets.append(int.from_bytes(digest[:8], "big") % size)
        skips.append(int.from_bytes(digest[8:], "big") % (size - 1) + 1)
    owner = [-1] * size
    position = offsets[:]  # each replica's current place in its permutation
    filled = 0
    while True:
        for i, skip in enumerate(skips):
            c = position[i]
            while owner[c] >= 0:
                c = (c + skip) % size
            owner[c] = i
            position[i] = (c + skip) % size
            filled += 1
            if filled == size:
                return [names[i] for i in owner]


class MaglevRing:
    """The lookup table plus the seeds used to order fallbacks."""

    __slots__ = ("_table", "_size", "_seeded")

    def __init__(self, table: list[str], seeded: tuple[tuple[int, str], ...]) -> None:
        self._table = table
        self._size = len(table)
        self._seeded = seeded

    def __reduce__(self) -> tuple[type[MaglevRing], tuple[list[str], tuple[tuple[int, str], ...]]]:
        """Pickle by constructor arguments (workers get the ring so; compiled classes have no __dict__)."""
        return (MaglevRing, (self._table, self._seeded))

    def lookup(self, key: str) -> str:
        """Return the table entry for the key's hash."""
        # hash64 inlined: saves a Python call on the hot path.
        return self._table[(int.from_bytes(md5(key.encode()).digest(), "big") >> 64) % self._size]

    def successors(self, key: str) -> Iterator[str]:
        """Yield the table's pick first, then the others in the key's rendezvous order."""
        primary = self._table[hash64(key) % self._size]
        yield primary
        for name in rank(score_key(key), self._seeded):
            if name != primary:
                yield name


class MaglevStrategy:
    """Maglev: O(1) lookup and near-perfect spread, at the price of a little extra movement on change."""

    name: ClassVar[str] = "maglev"

    def __init__(self, table_size: int = TABLE_SIZE) -> None:
        if not is_prime(table_size):
            raise ValueError(f"maglev table size must be prime, got {table_size}")
        self.table_size = table_size

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return the populated lookup table."""
        names = members(replicas)
        if not names:
            return EmptyRing()
        return MaglevRing(populate(names, self.table_size), tuple((seed_of(name), name) for name in names))
