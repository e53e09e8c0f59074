"""Stopping the LB stops every replica it started: SIGTERM, Ctrl-C (SIGINT) and even SIGKILL."""

from __future__ import annotations

import signal

import pytest

from tests.lb_support import LBFactory, alive, child_pids, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_no_replica_process_outlives_the_lb(lb_factory: LBFactory, sig: int) -> None:
    lb = lb_factory(replicas="3")
    lb.client.post("/add", json={"n": 1, "hostnames": ["extra"]}).raise_for_status()
    replicas = child_pids(lb.proc.pid)
    assert len(replicas) == 4
    assert all(alive(pid) for pid in replicas)
    lb.stop(sig)
    wait_until(lambda: not any(alive(pid) for pid in replicas), timeout=10)


def test_removed_replica_process_is_stopped(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    before = child_pids(lb.proc.pid)
    lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["Server 2"]}).raise_for_status()
    after = child_pids(lb.proc.pid)
    assert len(after) == 1 and after < before
    (gone,) = before - after
    wait_until(lambda: not alive(gone), timeout=5)
