"""Hash rings: the Ring and HashStrategy protocols and the strategies, picked by name.

Pure code: no I/O, no asyncio, no HTTP. A strategy builds an immutable ring once per membership change.
"""

from __future__ import annotations

from app.ring.base import HashStrategy, NoReplicasError, Ring
from app.ring.registry import (
    STRATEGIES,
    AssignmentStrategy,
    BuiltinStrategy,
    KetamaStrategy,
    MaglevStrategy,
    RendezvousStrategy,
    Sha256Strategy,
    make_strategy,
)

__all__ = [
    "STRATEGIES",
    "AssignmentStrategy",
    "BuiltinStrategy",
    "HashStrategy",
    "KetamaStrategy",
    "MaglevStrategy",
    "NoReplicasError",
    "RendezvousStrategy",
    "Ring",
    "Sha256Strategy",
    "make_strategy",
]
