"""Membership changes while proxied requests run: no 5xx, and /rep ends consistent."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.lb_support import LBFactory
from tests.load import Load


@pytest.mark.parametrize("workers", ["1", "2"])
def test_add_and_remove_under_load_never_fail_a_request(lb_factory: LBFactory, workers: str) -> None:
    lb = lb_factory(replicas="3", workers=workers)
    with Load(lb.url, workers=4, max_requests=20_000) as load:
        load.wait_for(200)
        for round_ in range(3):
            lb.client.post("/add", json={"n": 2, "hostnames": [f"A{round_}"]}).raise_for_status()
            load.wait_for(100)
            lb.client.request("DELETE", "/rm", json={"n": 2, "hostnames": [f"A{round_}"]}).raise_for_status()
            load.wait_for(100)
    assert load.errors == []
    assert set(load.statuses) == {200}, load.statuses
    assert load.total >= 900
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3"]


def test_concurrent_membership_calls_are_serialized(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1")

    def add(name: str) -> int:
        return httpx.post(f"{lb.url}/add", json={"n": 1, "hostnames": [name]}, timeout=30).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(add, ["B1", "B2", "B3", "B1", "B2", "B3"]))
    assert sorted(codes) == [200, 200, 200, 409, 409, 409]
    assert lb.replicas() == ["B1", "B2", "B3", "Server 1"]

    def remove(n: int) -> int:
        return httpx.request("DELETE", f"{lb.url}/rm", json={"n": n}, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(remove, [1, 1, 1, 1])) == [200] * 4
    assert lb.replicas() == []
