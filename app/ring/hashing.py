"""Helpers every strategy shares: the key hash, replica numbering, members, and the empty ring."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from hashlib import md5

from app.errors import NoReplicasError

NO_REPLICAS = "No replicas available"
_TRAILING_INT = re.compile(r"(\d+)$")


def hash64(text: str) -> int:
    """First 8 bytes of md5(text), big-endian: stable across processes, unlike hash()."""
    # `>> 64` of the whole digest equals int.from_bytes(digest[:8]) without slicing a new bytes object.
    return int.from_bytes(md5(text.encode()).digest(), "big") >> 64


def replica_number(name: str) -> int:
    """A number that depends only on the name: its trailing integer ("Server 3" -> 3), else md5-derived."""
    match = _TRAILING_INT.search(name)
    return int(match.group(1)) if match else hash64(name)


def members(replicas: Sequence[str]) -> list[str]:
    """Distinct names, sorted, so a ring never depends on the order it was given them in."""
    return sorted(set(replicas))


class EmptyRing:
    """The ring of no replicas: every lookup fails, there is nothing to fall back to."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[EmptyRing], tuple[()]]:
        """Pickle by constructor arguments (workers get the ring so; compiled classes have no __dict__)."""
        return (EmptyRing, ())

    def lookup(self, key: str) -> str:
        """Raise: no replica can take the key."""
        raise NoReplicasError(NO_REPLICAS)

    def successors(self, key: str) -> Iterator[str]:
        """Yield nothing."""
        return iter(())
