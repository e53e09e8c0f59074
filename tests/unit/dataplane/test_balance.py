"""Bounded loads: the cap and the choice along a key's fallback order (pure, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

from app.dataplane.balance import load_cap, pick_bounded
from app.ring import make_strategy


@dataclass
class Load:
    """What pick_bounded reads from an UpstreamPool."""

    in_flight: int = 0


def test_the_cap_is_factor_times_the_mean_rounded_up_and_at_least_one() -> None:
    assert load_cap(0, 4, 1.25) == 1
    assert load_cap(3, 4, 1.25) == 1  # ceil(0.9375)
    assert load_cap(64, 4, 1.25) == 20
    assert load_cap(63, 4, 1.25) == 20  # ceil(19.69)
    assert load_cap(10, 3, 2.0) == 7


def test_a_key_stays_home_until_its_replica_reaches_the_cap() -> None:
    ring = make_strategy("rendezvous").build(["a", "b", "c", "d"])
    key = "123456"
    order = list(ring.successors(key))
    loads = {name: Load(4) for name in order}
    assert pick_bounded(ring, key, order[0], loads, 1.25) == order[0]  # 4 < ceil(1.25 x 4) = 5
    loads[order[0]].in_flight = 5
    assert pick_bounded(ring, key, order[0], loads, 1.25) == order[0]  # 5 < ceil(1.25 x 17 / 4) = 6
    loads[order[0]].in_flight = 7
    assert pick_bounded(ring, key, order[0], loads, 1.25) == order[1]  # cap 6
    loads[order[1]].in_flight = 7
    assert pick_bounded(ring, key, order[0], loads, 1.25) == order[2]  # cap 7: the next in the fallback order


def test_an_idle_pool_sends_every_key_home() -> None:
    ring = make_strategy("ketama").build(["a", "b", "c"])
    loads = {name: Load() for name in ("a", "b", "c")}
    for key in map(str, range(200)):
        assert pick_bounded(ring, key, ring.lookup(key), loads, 1.25) == ring.lookup(key)
