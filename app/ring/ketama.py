"""Ketama (libketama / uhashring compatible): md5 points on a 32-bit continuum, bisect lookup."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from hashlib import md5
from typing import ClassVar

from app.ring.base import Ring
from app.ring.hashing import EmptyRing, members

POINTS_PER_DIGEST = 4  # libketama cuts each 16-byte md5 digest into four 32-bit points


def ketama_points(name: str, vnodes: int) -> list[int]:
    """The replica's `vnodes` points: four little-endian words of md5(f"{name}-{i}") per digest."""
    points: list[int] = []
    digests = -(-vnodes // POINTS_PER_DIGEST)
    for i in range(digests):
        digest = md5(f"{name}-{i}".encode()).digest()
        for word in range(POINTS_PER_DIGEST):
            points.append(int.from_bytes(digest[4 * word : 4 * word + 4], "little"))
    return points[:vnodes]


class KetamaRing:
    """Sorted points plus their owners; the owner list repeats the first owner so wrap-around is free."""

    __slots__ = ("_points", "_owners", "_total")

    def __init__(self, points: list[int], owners: list[str], total: int) -> None:
        self._points = points
        self._owners = owners
        self._total = total

    def __reduce__(self) -> tuple[type[KetamaRing], tuple[list[int], list[str], int]]:
        """Pickle by constructor arguments (workers get the ring so; compiled classes have no __dict__)."""
        return (KetamaRing, (self._points, self._owners, self._total))

    def lookup(self, key: str) -> str:
        """Return the owner of the first point above the key's hash (libketama's rule)."""
        digest = md5(key.encode()).digest()
        return self._owners[bisect_right(self._points, int.from_bytes(digest, "little") & 0xFFFFFFFF)]

    def positions(self) -> list[tuple[float, str]]:
        """Every point as (fraction of the 32-bit continuum, owner), in ring order (for introspection)."""
        return [(point / 2**32, owner) for point, owner in zip(self._points, self._owners, strict=False)]

    def successors(self, key: str) -> Iterator[str]:
        """Yield distinct replicas clockwise from the key's point."""
        digest = md5(key.encode()).digest()
        start = bisect_right(self._points, int.from_bytes(digest, "little") & 0xFFFFFFFF)
        owners = self._owners
        n = len(self._points)
        seen: set[str] = set()
        for step in range(n):
            name = owners[(start + step) % n]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == self._total:
                    return


class KetamaStrategy:
    """Ketama with `vnodes` points per replica (160 = libketama's 40 digests x 4)."""

    name: ClassVar[str] = "ketama"

    def __init__(self, vnodes: int = 160) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.vnodes = vnodes

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return the continuum of every replica's points."""
        names = members(replicas)
        if not names:
            return EmptyRing()
        # On the (rare) equal point the later name in sorted order wins, as in uhashring fed sorted names.
        ring: dict[int, str] = {}
        for name in names:
            for point in ketama_points(name, self.vnodes):
                ring[point] = name
        points = sorted(ring)
        owners = [ring[p] for p in points]
        owners.append(owners[0])
        return KetamaRing(points, owners, len(names))
