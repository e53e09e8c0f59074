"""LB_WORKERS=2: what only several processes have. Membership changes reach every process, and the workers
die with the owner. (The contract and failover suites run with LB_WORKERS=1 and 2 in their own modules.)"""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.lb_support import FRESH, LBFactory, RunningLB, alive, fresh_get, wait_until, worker_pids


@pytest.fixture
def two_workers(lb_factory: LBFactory) -> RunningLB:
    return lb_factory(replicas="3", workers="2")


def test_membership_changes_reach_every_process(two_workers: RunningLB) -> None:
    lb = two_workers
    added = httpx.post(f"{lb.url}/add", json={"n": 1, "hostnames": ["S9"]}, timeout=30)
    assert added.status_code == 200, added.text
    assert {fresh_get(lb, "/rep").json()["message"]["N"] for _ in range(FRESH)} == {4}
    # Some keys move to the new replica, and every process routes them there.
    keys = [str(k) for k in range(200)]
    moved = [k for k in keys if lb.serving(k) == "S9"]
    assert moved
    for key in moved[:5]:
        assert {fresh_get(lb, "/home", id=key).json()["message"] for _ in range(10)} == {
            "Hello from Server: S9"
        }
    removed = httpx.request("DELETE", f"{lb.url}/rm", json={"n": 1, "hostnames": ["S9"]}, timeout=30)
    assert removed.status_code == 200, removed.text
    for key in moved[:5]:
        assert {fresh_get(lb, "/home", id=key).json()["message"] for _ in range(10)} != {
            "Hello from Server: S9"
        }


def test_workers_die_with_the_owner(two_workers: RunningLB) -> None:
    lb = two_workers
    workers = worker_pids(lb)
    assert len(workers) == 1
    lb.proc.send_signal(signal.SIGKILL)
    lb.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=15)
