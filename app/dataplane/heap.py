"""Garbage-collector settings for a data-plane process: fewer and cheaper collections on the hot path.

A proxied request allocates a few dozen container objects that die young (reference counting frees
them), yet every 700 allocations start a generation-0 collection, and the rarer full collections walk
every object the app holds (FastAPI and pydantic build ~10^5 at start-up): a latency spike each time.
Freezing what start-up built takes it out of the collector's walks (the advice of CPython's `gc.freeze`
docs for long-running servers), and a larger first threshold makes young collections rarer. Reference
cycles are still collected.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between generation-0 collections (CPython's default: 700)


def settle_heap() -> None:
    """Call once start-up is done, before serving."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
