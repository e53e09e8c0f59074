"""Rendezvous (highest random weight) hashing: every replica scores the key, the highest score wins."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from hashlib import md5
from typing import ClassVar

from app.ring.base import Ring
from app.ring.hashing import EmptyRing, hash64, members

# 30-bit arithmetic: CPython ints below 2^30 are one digit, which makes the per-replica mix ~25% cheaper
# than 64-bit. Ties (2^-30 per pair) go to the first name in sorted order, so lookups stay deterministic.
BITS = 30
MASK = (1 << BITS) - 1
MIX = 0x278DDE6D  # odd, 2^30 / golden ratio (Fibonacci hashing)


def score_key(key: str) -> int:
    """The key's 30-bit hash that every replica's score mixes with."""
    return hash64(key) >> (64 - BITS)


def seed_of(name: str) -> int:
    """A replica's 30-bit seed: from its name, so a re-created replica gets its keys back."""
    return hash64(name) >> (64 - BITS)


def weight(key_score: int, seed: int) -> int:
    """A replica's score for a key: multiply-mod-2^30 of key ^ seed (top bits depend on every input bit)."""
    return ((key_score ^ seed) * MIX) & MASK


def rank(key_score: int, seeded: Sequence[tuple[int, str]]) -> list[str]:
    """Replica names by descending score for the key (the fallback order); ties keep sorted-name order."""
    return [name for _, _, name in sorted((-weight(key_score, s), i, n) for i, (s, n) in enumerate(seeded))]


class RendezvousRing:
    """(seed, name) pairs in name order; a lookup hashes the key once and mixes it with each seed."""

    __slots__ = ("_seeded",)

    def __init__(self, seeded: tuple[tuple[int, str], ...]) -> None:
        self._seeded = seeded

    def __reduce__(self) -> tuple[type[RendezvousRing], tuple[tuple[tuple[int, str], ...]]]:
        """Pickle by constructor arguments (workers get the ring so; compiled classes have no __dict__)."""
        return (RendezvousRing, (self._seeded,))

    def lookup(self, key: str) -> str:
        """Return the replica with the highest score for the key."""
        # score_key and weight inlined: a Python call per replica would double the cost at N=10.
        k = int.from_bytes(md5(key.encode()).digest(), "big") >> (128 - BITS)
        best = -1
        owner = ""
        for seed, name in self._seeded:
            z = ((k ^ seed) * MIX) & MASK
            if z > best:
                best = z
                owner = name
        return owner

    def successors(self, key: str) -> Iterator[str]:
        """Yield every replica by descending score."""
        return iter(rank(score_key(key), self._seeded))


class RendezvousStrategy:
    """Highest random weight: minimal movement and even spread, O(N) per lookup."""

    name: ClassVar[str] = "rendezvous"

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return a ring of per-replica seeds derived from the names."""
        names = members(replicas)
        if not names:
            return EmptyRing()
        return RendezvousRing(tuple((seed_of(name), name) for name in names))
