"""Stopping the LB stops every replica it started: SIGTERM, Ctrl-C (SIGINT) and even SIGKILL."""

from __future__ import annotations

import signal

import pytest

from tests.lb_support import LBFactory, alive, descendants, replica_pids, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_no_replica_process_outlives_the_lb(lb_factory: LBFactory, sig: int) -> None:
    lb = lb_factory(replicas="3")
    lb.client.post("/add", json={"n": 1, "hostnames": ["extra"]}).raise_for_status()
    replicas = set(replica_pids(lb).values())
    assert len(replicas) == 4
    everything = descendants(lb.proc.pid)  # replicas plus the fork server and its helper
    assert replicas <= everything and all(alive(pid) for pid in everything)
    lb.stop(sig)
    wait_until(lambda: not any(alive(pid) for pid in everything), timeout=10)


def test_removed_replica_process_is_stopped(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    gone = replica_pids(lb)["Server 2"]
    lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["Server 2"]}).raise_for_status()
    assert set(replica_pids(lb)) == {"Server 1"}
    wait_until(lambda: not alive(gone), timeout=5)
