"""LB_WORKERS=2: two processes serve the port; any of them gives the same answers, and failover holds."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.lb_support import LBFactory, RunningLB, alive, cpu_seconds, descendants, replica_pids, wait_until
from tests.load import Load

FRESH = 40  # new connections per check: the kernel spreads them over the processes


def worker_pids(lb: RunningLB) -> list[int]:
    """The LB's data-plane worker processes (not its replicas)."""
    pids = []
    for pid in descendants(lb.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"app.dataplane.worker" in cmdline:
            pids.append(pid)
    return pids


def fresh_get(lb: RunningLB, path: str, **params: str) -> httpx.Response:
    """One request on a new connection (which may land on any process)."""
    return httpx.get(f"{lb.url}{path}", params=params, timeout=10, headers={"connection": "close"})


@pytest.fixture
def two_workers(lb_factory: LBFactory) -> RunningLB:
    lb = lb_factory(replicas="3", workers="2")
    wait_until(lambda: worker_pids(lb), timeout=30)
    (worker,) = worker_pids(lb)
    # Serving: the worker's port is bound once it took the first routing table.
    wait_until(lambda: _served_by_worker(lb, worker), timeout=30)
    return lb


def _served_by_worker(lb: RunningLB, worker: int) -> bool:
    before = cpu_seconds(worker)
    for _ in range(FRESH):
        assert fresh_get(lb, "/home", id="1").status_code == 200
    return cpu_seconds(worker) > before


def test_every_process_gives_the_same_answers(two_workers: RunningLB) -> None:
    lb = two_workers
    assert {fresh_get(lb, "/home", id="42").json()["message"] for _ in range(FRESH)} == {
        f"Hello from Server: {lb.serving('42')}"
    }
    assert {fresh_get(lb, "/rep").text for _ in range(FRESH)} == {lb.client.get("/rep").text}
    response = fresh_get(lb, "/other")
    assert response.status_code == 400
    assert response.json()["message"] == "<Error> '/other' endpoint does not exist in server replicas"
    assert fresh_get(lb, "/docs").status_code == 200
    assert fresh_get(lb, "/add").status_code == 405


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


def test_a_killed_replica_fails_no_request_through_any_process(two_workers: RunningLB) -> None:
    lb = two_workers
    pid = replica_pids(lb)["Server 2"]
    with Load(lb.url, workers=6, max_requests=20_000) as load:
        load.wait_for(300)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: replica_pids(lb).get("Server 2") not in (None, pid), timeout=15)
        load.wait_for(300)
    assert load.errors == [], load.errors[:3]
    assert set(load.statuses) == {200}, load.statuses


def test_workers_die_with_the_owner(two_workers: RunningLB) -> None:
    lb = two_workers
    workers = worker_pids(lb)
    lb.proc.send_signal(signal.SIGKILL)
    lb.proc.wait(10)
    for pid in workers:
        wait_until(lambda pid=pid: not alive(pid), timeout=15)
