"""Ring introspection as pure functions: the fixed key sample, shares, points, routes and plans."""

from __future__ import annotations

import pytest

from app.ring import make_strategy
from app.ring.introspect import SAMPLE_SIZE, plan, positions, route, sample_keys, shares


def test_the_sample_is_fixed_distinct_and_shaped_like_request_ids() -> None:
    keys = sample_keys()
    assert len(keys) == len(set(keys)) == SAMPLE_SIZE
    assert all(len(k) == 6 and k.isdigit() for k in keys)
    assert keys[:3] == sample_keys()[:3]


@pytest.mark.parametrize("name", ["rendezvous", "ketama", "maglev", "sha256"])
def test_plan_of_an_add_moves_keys_only_to_the_new_replica(name: str) -> None:
    strategy = make_strategy(name)
    result = plan(strategy, ["a1", "a2", "a3"], ["a4"], [], sample_keys())
    assert result.moved == sum(n for _, _, n in result.flows)
    if name != "maglev":  # maglev moves a few keys between others (documented)
        assert {target for _, target, _ in result.flows} == {"a4"}
    assert 0.15 < result.moved / SAMPLE_SIZE < 0.35
    assert [n for _, _, n in result.flows] == sorted((n for _, _, n in result.flows), reverse=True)


def test_plan_rejects_a_name_given_twice() -> None:
    with pytest.raises(ValueError, match="more than once"):
        plan(make_strategy("rendezvous"), ["a1"], ["a2"], ["a2"], sample_keys())


@pytest.mark.parametrize("name", ["rendezvous", "ketama", "maglev", "assignment"])
def test_route_is_lookup_then_the_successors(name: str) -> None:
    ring = make_strategy(name).build(["s1", "s2", "s3", "s4"])
    for key in sample_keys()[:200]:
        replica, fallbacks = route(ring, key, tries=3)
        assert [replica, *fallbacks] == list(ring.successors(key))[:3]
        assert replica == ring.lookup(key)


def test_positions_are_sorted_fractions_where_the_strategy_has_points() -> None:
    ketama = positions(make_strategy("ketama", vnodes=40).build(["s1", "s2"]))
    assert len(ketama) == 80
    assert [p for p, _ in ketama] == sorted(p for p, _ in ketama)
    assert all(0 <= p < 1 for p, _ in ketama)
    assert len(positions(make_strategy("sha256").build(["s1", "s2"]))) == 18
    assert positions(make_strategy("rendezvous").build(["s1", "s2"])) == []


def test_shares_sum_to_one() -> None:
    got = shares(make_strategy("rendezvous").build(["s1", "s2", "s3"]), sample_keys())
    assert set(got) == {"s1", "s2", "s3"} and sum(got.values()) == pytest.approx(1.0)
