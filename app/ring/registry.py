"""Hash strategies by name: STRATEGIES and make_strategy are what the rest of the app uses.

Rings are pure, immutable and deterministic; only `builtin` uses hash(), to show it is salted per process.
"""

from __future__ import annotations

from app.ring.base import HashStrategy
from app.ring.ketama import KetamaStrategy
from app.ring.maglev import MaglevStrategy
from app.ring.rendezvous import RendezvousStrategy
from app.ring.slot_strategies import AssignmentStrategy, BuiltinStrategy, Sha256Strategy

__all__ = [
    "STRATEGIES",
    "AssignmentStrategy",
    "BuiltinStrategy",
    "KetamaStrategy",
    "MaglevStrategy",
    "RendezvousStrategy",
    "Sha256Strategy",
    "make_strategy",
]

STRATEGIES: dict[str, type[HashStrategy]] = {
    cls.name: cls
    for cls in (
        BuiltinStrategy,
        AssignmentStrategy,
        Sha256Strategy,
        KetamaStrategy,
        RendezvousStrategy,
        MaglevStrategy,
    )
}


def make_strategy(name: str, vnodes: int = 160) -> HashStrategy:
    """Return a new strategy by name; `vnodes` applies to ketama only."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown hash strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == KetamaStrategy.name:
        return KetamaStrategy(vnodes=vnodes)
    return STRATEGIES[name]()
