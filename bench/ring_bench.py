"""Spread, movement and lookup cost of every hash strategy: the numbers the default strategy is picked from.

Run `python -m bench.ring_bench`; prints a table and writes bench/out/ring.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import timeit
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.ring import STRATEGIES, Ring, make_strategy
from bench.report import publish

DEFAULT_OUT = Path(__file__).parent / "out" / "ring.md"


@dataclass(frozen=True)
class Row:
    """One strategy at one replica count."""

    strategy: str
    n: int
    max_mean: float
    max_mean_seq: float
    cv: float
    moved: float
    cross: float
    lookup_us: float

    @property
    def ideal(self) -> float:
        """Share of keys that must move when one replica joins N: 1/(N+1)."""
        return 1 / (self.n + 1)


def random_ids(count: int, seed: int) -> list[str]:
    """Distinct 6-digit request ids, as the LB draws for requests without a key."""
    return [str(i) for i in random.Random(seed).sample(range(100_000, 1_000_000), count)]


def sequential_ids(count: int) -> list[str]:
    """Consecutive 6-digit ids: a client that numbers its requests."""
    return [str(i) for i in range(100_000, 100_000 + count)]


def replica_names(n: int) -> list[str]:
    """The LB's generated names: 'Server 1' .. 'Server n'."""
    return [f"Server {i}" for i in range(1, n + 1)]


def spread(ring: Ring, keys: Sequence[str], n: int) -> tuple[float, float]:
    """(max/mean, coefficient of variation) of keys per replica; empty replicas count as 0."""
    counts = Counter(ring.lookup(key) for key in keys)
    loads = [counts.get(name, 0) for name in replica_names(n)]
    mean = len(keys) / n
    return max(loads) / mean, statistics.pstdev(loads) / mean


def movement(before: Ring, after: Ring, keys: Sequence[str], newcomer: str) -> tuple[float, float]:
    """(share of keys that changed replica, share that moved between two old replicas)."""
    moved = cross = 0
    for key in keys:
        old, new = before.lookup(key), after.lookup(key)
        if old != new:
            moved += 1
            cross += new != newcomer
    return moved / len(keys), cross / len(keys)


def lookup_us(ring: Ring, keys: Sequence[str], repeat: int) -> float:
    """Best-of-`repeat` microseconds per lookup over the whole key set (includes hashing the key)."""
    lookup = ring.lookup

    def run() -> None:
        for key in keys:
            lookup(key)

    return min(timeit.repeat(run, number=1, repeat=repeat)) / len(keys) * 1e6


def measure(name: str, n: int, keys: Sequence[str], seq: Sequence[str], repeat: int) -> Row:
    """Every number of one table row."""
    strategy = make_strategy(name)
    ring = strategy.build(replica_names(n))
    grown = strategy.build(replica_names(n + 1))
    max_mean, cv = spread(ring, keys, n)
    max_mean_seq, _ = spread(ring, seq, n)
    moved, cross = movement(ring, grown, keys, f"Server {n + 1}")
    return Row(name, n, max_mean, max_mean_seq, cv, moved, cross, lookup_us(ring, keys, repeat))


def render(rows: Sequence[Row], keys: int, seed: int) -> str:
    """A markdown table plus the parameters it was measured with."""
    hashseed = os.environ.get("PYTHONHASHSEED", "random")
    lines = [
        f"# Hash strategies: {keys:,} keys (random 6-digit ids, seed {seed}; and sequential ids)",
        "",
        "Replicas are named 'Server 1'..'Server N'; 'moved' is the share of keys that change replica when",
        "'Server N+1' joins (ideal 1/(N+1)); 'cross' is the share that moved between two old replicas.",
        f"builtin depends on PYTHONHASHSEED (this run: {hashseed}).",
        "",
        "| strategy | N | max/mean | max/mean seq | CV | moved | ideal | moved/ideal | cross | lookup µs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.strategy} | {r.n} | {r.max_mean:.3f} | {r.max_mean_seq:.3f} | {r.cv:.3f} | {r.moved:.1%} "
            f"| {r.ideal:.1%} | {r.moved / r.ideal:.2f} | {r.cross:.2%} | {r.lookup_us:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure every strategy at every size, print the table and write it to --out."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--backends", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--repeat", type=int, default=5, help="timeit repeats (best is kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    keys = random_ids(args.keys, args.seed)
    seq = sequential_ids(args.keys)
    rows = [measure(name, n, keys, seq, args.repeat) for name in STRATEGIES for n in args.backends]
    table = render(rows, args.keys, args.seed)
    publish(table, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
