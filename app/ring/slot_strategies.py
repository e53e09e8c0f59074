"""The three M=512, K=9 strategies the course and the seed name: builtin, assignment and sha256."""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import md5, sha256
from typing import ClassVar

from app.ring.base import Ring
from app.ring.hashing import hash64, replica_number
from app.ring.slots import SLOTS, build_slot_ring


def builtin_key_slot(key: str) -> int:
    """The seed's original request hash; hash() is salted per process (PYTHONHASHSEED)."""
    return hash(key) % SLOTS


def builtin_vserver_slot(name: str, j: int) -> int:
    """The seed's original virtual-server hash, salted like builtin_key_slot."""
    return hash(f"{name}-{j}") % SLOTS


class BuiltinStrategy:
    """The seed's original ring on hash(): kept to show that it is not stable across restarts."""

    name: ClassVar[str] = "builtin"

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return the slot ring with hash() on both sides."""
        return build_slot_ring(replicas, builtin_key_slot, builtin_vserver_slot)


def assignment_key_slot(key: str) -> int:
    """H(i) = i^2 + 2i + 17 mod M, i = the key as an integer when it is all digits."""
    if key.isascii() and key.isdigit():
        # H depends on i mod 512 only and 512 divides 10^18, so the last 18 digits suffice
        # (and int() of a huge digit string would raise past Python's 4300-digit limit).
        i = int(key[-18:])
    else:
        i = hash64(key)
    return (i * i + 2 * i + 17) % SLOTS


def assignment_vserver_slot(name: str, j: int) -> int:
    """Phi(i, j) = i^2 + j^2 + 2j + 25 mod M, i = the replica's stable number."""
    i = replica_number(name)
    return (i * i + j * j + 2 * j + 25) % SLOTS


class AssignmentStrategy:
    """The course's functions exactly; kept to document their skew, not to route traffic."""

    name: ClassVar[str] = "assignment"

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return the slot ring with the course's H and Phi."""
        return build_slot_ring(replicas, assignment_key_slot, assignment_vserver_slot)


def sha256_key_slot(key: str) -> int:
    """The seed's fix for the request hash: sha256 of the key."""
    return int.from_bytes(sha256(key.encode()).digest(), "big") % SLOTS


def md5_vserver_slot(name: str, j: int) -> int:
    """The seed's fix for the virtual-server hash: md5 of f"{name}-{j}"."""
    return int.from_bytes(md5(f"{name}-{j}".encode()).digest(), "big") % SLOTS


class Sha256Strategy:
    """The seed's stable variant: sha256 keys, md5 virtual servers, M=512, K=9."""

    name: ClassVar[str] = "sha256"

    def build(self, replicas: Sequence[str]) -> Ring:
        """Return the slot ring with sha256/md5."""
        return build_slot_ring(replicas, sha256_key_slot, md5_vserver_slot)
