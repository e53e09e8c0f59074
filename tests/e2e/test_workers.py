"""LB_WORKERS=2: what only several processes have. Membership changes reach every process, the workers
die with the owner, a killed worker is restarted, the counters add up, and LB_PORT=0 gives one shared port.
(The contract and failover suites run with LB_WORKERS=1 and 2 in their own modules.)"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_request_metrics import samples, total
from tests.lb_support import FRESH, ROOT, LBFactory, RunningLB, alive, fresh_get, wait_until, worker_pids

MAX_REQUESTS = 20_000  # bound of every open-ended request loop (they end on a condition, or time out)


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
    argv = Path(f"/proc/{workers[0]}/cmdline").read_bytes().decode().split("\0")
    private = Path(argv[argv.index("--control") + 1]).parent  # the owner's folder for its workers' socket
    assert private.is_dir()
    lb.proc.send_signal(signal.SIGKILL)
    lb.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in workers), timeout=15)
    assert not private.exists()  # the owner could not remove it: its last worker did


def worker_row(lb: RunningLB, index: int = 1) -> dict[str, Any]:
    """The process's row in /status (index 0: the owner)."""
    rows: list[dict[str, Any]] = lb.client.get("/status").json()["workers"]
    (row,) = [row for row in rows if row["index"] == index]
    return row


def serve_until(lb: RunningLB, done: Callable[[], object], timeout: float) -> int:
    """Requests on new connections, each answered 200, until `done()`; returns how many were sent."""
    sent = 0

    def one_more() -> object:
        nonlocal sent
        assert sent < MAX_REQUESTS
        response = fresh_get(lb, "/home", id=f"k{sent}")
        sent += 1
        assert response.status_code == 200, response.text
        return done()

    wait_until(one_more, timeout=timeout)
    return sent


def test_a_killed_worker_is_restarted_and_serves(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2", workers="2", worker_stats_interval="0.1")
    (old,) = worker_pids(lb)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not alive(old), timeout=10)
    # Until its replacement is up, the owner answers every request alone.
    serve_until(lb, lambda: worker_row(lb)["pid"] not in (None, old), timeout=30)
    row = worker_row(lb)
    assert row["restarts"] == 1 and worker_pids(lb) == [row["pid"]]
    assert f"data-plane worker 1 (pid {old}) was killed by SIGKILL; restarting it in" in lb.log()
    assert total(samples(lb), "chlb_worker_restarts_total", worker="1") == 1
    # The new process took the routing table and proxies: the requests it counts all came back 200.
    serve_until(lb, lambda: worker_row(lb)["requests"] > 0, timeout=60)
    assert worker_row(lb)["pid"] == row["pid"]


def test_stopping_the_lb_restarts_no_worker(two_workers: RunningLB) -> None:
    lb = two_workers
    workers = worker_pids(lb)
    lb.stop()
    assert lb.proc.returncode == 0
    assert not any(alive(pid) for pid in workers)
    assert "restarting" not in lb.log()


def test_metrics_and_status_count_the_requests_of_every_process(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2", workers="2", worker_stats_interval="0.1")
    wait_until(lambda: worker_pids(lb), timeout=30)

    def both_served() -> bool:
        return all(worker_row(lb, index)["requests"] > 0 for index in (0, 1))

    sent = serve_until(lb, both_served, timeout=60)  # the only proxied requests this LB has seen
    wait_until(lambda: total(samples(lb), "chlb_requests_total") == sent, timeout=10)
    assert total(samples(lb), "chlb_upstream_latency_seconds_count") == sent
    status = lb.client.get("/status").json()
    assert sum(row["requests"] for row in status["replicas"]) == sent
    assert sum(row["requests"] for row in status["workers"]) == sent
    assert all(row["latency_p99_ms"] is not None for row in status["replicas"] if row["requests"])


def listening_ports(pid: int) -> set[int]:
    """TCP ports `pid` listens on, from its socket fds and /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_with_port_0_the_workers_share_the_port_the_owner_got(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_HOST="127.0.0.1", LB_PORT="0", LB_WORKERS="2", LB_REPLICAS="1", LB_LOG_LEVEL="info")
    env.update(LB_DB_PATH=str(tmp_path / "votes.sqlite3"))
    log_path = tmp_path / "lb.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log, stderr=log)
    lb = RunningLB(0, proc, log_path, env)
    try:
        opened = re.compile(r"open dashboard http://127\.0\.0\.1:(\d+)/")
        port = int(wait_until(lambda: opened.findall(lb.log()), timeout=30)[0])
        (worker,) = wait_until(lambda: worker_pids(lb), timeout=30)
        wait_until(lambda: port in listening_ports(worker), timeout=30)
        assert listening_ports(worker) - {port} == set()  # no port of its own
        assert httpx.get(f"http://127.0.0.1:{port}/rep", timeout=10).status_code == 200
    finally:
        lb.stop()
