"""The M=512, K=9 slot ring the course and the seed use, parameterised by its two hash functions.

builtin, assignment and sha256 differ only in how a key and a virtual server pick a slot, so they
share this builder: probing on collisions, nearest virtual server clockwise, one owner per slot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from app.ring.base import Ring
from app.ring.hashing import EmptyRing, members, replica_number

SLOTS = 512
VSERVERS = 9  # log2(SLOTS), as the course specifies

KeySlot = Callable[[str], int]
VServerSlot = Callable[[str, int], int]


class SlotRing:
    """A ring of SLOTS slots with a precomputed owner per slot, so a lookup is one hash and one index."""

    __slots__ = ("_slot_of", "_owner", "_points", "_names")

    def __init__(self, slot_of: KeySlot, placed: list[tuple[int, str]], slots: int) -> None:
        placed.sort()
        self._slot_of = slot_of
        self._points = [slot for slot, _ in placed]
        self._names = [name for _, name in placed]
        n = len(placed)
        # A key in slot s goes to the first virtual server at a slot >= s, wrapping to the first one.
        self._owner = [self._names[bisect_left(self._points, s) % n] for s in range(slots)]

    def __reduce__(self) -> tuple[type[SlotRing], tuple[KeySlot, list[tuple[int, str]], int]]:
        """Pickle by constructor arguments (workers get the ring so; compiled classes have no __dict__)."""
        placed = list(zip(self._points, self._names, strict=True))
        return (SlotRing, (self._slot_of, placed, len(self._owner)))

    def lookup(self, key: str) -> str:
        """Return the owner of the key's slot."""
        return self._owner[self._slot_of(key)]

    def positions(self) -> list[tuple[float, str]]:
        """Every virtual server as (slot / slot count, replica), in ring order (for introspection)."""
        slots = len(self._owner)
        return [(point / slots, name) for point, name in zip(self._points, self._names, strict=True)]

    def successors(self, key: str) -> Iterator[str]:
        """Yield distinct replicas clockwise from the key's slot."""
        names = self._names
        n = len(names)
        start = bisect_left(self._points, self._slot_of(key))
        seen: set[str] = set()
        total = len(set(names))
        for step in range(n):
            name = names[(start + step) % n]
            if name not in seen:
                seen.add(name)
                yield name
                if len(seen) == total:
                    return


def probe(taken: list[bool], slot: int) -> int:
    """The first free slot in the quadratic sequence slot, slot+1, slot+4, slot+9, ... (mod M)."""
    size = len(taken)
    for k in range(size):
        candidate = (slot + k * k) % size
        if not taken[candidate]:
            return candidate
    # k*k mod 2^n reaches only a fraction of the slots; finish linearly so placement always succeeds.
    for k in range(size):
        candidate = (slot + k) % size
        if not taken[candidate]:
            return candidate
    raise ValueError("no free slot")


def build_slot_ring(
    replicas: Sequence[str],
    slot_of: KeySlot,
    vserver_slot: VServerSlot,
    slots: int = SLOTS,
    vservers: int = VSERVERS,
) -> Ring:
    """Place `vservers` virtual servers per replica by name, resolving collisions by quadratic probing."""
    names = members(replicas)
    if not names:
        return EmptyRing()
    if len(names) * vservers > slots:
        raise ValueError(f"{len(names)} replicas x {vservers} virtual servers do not fit in {slots} slots")
    # Placement order decides who probes on a collision. Ordering by replica number means replicas
    # added as server1, server2, ... never displace an incumbent's virtual server (see tests/test_ring.py).
    names.sort(key=lambda name: (replica_number(name), name))
    taken = [False] * slots
    placed: list[tuple[int, str]] = []
    for name in names:
        for j in range(vservers):
            slot = probe(taken, vserver_slot(name, j) % slots)
            taken[slot] = True
            placed.append((slot, name))
    return SlotRing(slot_of, placed, slots)
