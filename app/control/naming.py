"""Replica names: the order /rep shows them in, and the names /add generates."""

from __future__ import annotations

import re
from collections.abc import Collection


def natural_key(name: str) -> list[int | str]:
    """Sort "Server 2" before "Server 10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def generate_names(prefix: str, count: int, taken: Collection[str]) -> list[str]:
    """The smallest free `<prefix><k>`, so names are reused after removal (server1..serverN)."""
    used = set(taken)
    names: list[str] = []
    k = 1
    while len(names) < count:
        candidate = f"{prefix}{k}"
        if candidate not in used:
            names.append(candidate)
            used.add(candidate)
        k += 1
    return names
