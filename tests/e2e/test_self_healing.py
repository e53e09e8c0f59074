"""Self-healing with real replica processes and real kills: nobody sees a replica die.

The failover tests (requests in flight while a replica dies) run with one LB process and with two
(LB_WORKERS=2); the rest test the owner's control plane, which is the same in both.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from functools import partial

import pytest

from tests.lb_support import LBFactory, RunningLB, alive, cpu_seconds, replica_pids, wait_until
from tests.load import seconds_to_recover

CRASHING_REPLICA = [sys.executable, "-c", "raise SystemExit(3)", "{fd}"]
over_workers = pytest.mark.parametrize("workers", ["1", "2"], ids=lambda w: f"workers{w}")


def serving_again(lb: RunningLB, name: str, old_pid: int) -> bool:
    """`name` runs in a new process, is on the ring, and answers."""
    pid = replica_pids(lb).get(name)
    row = lb.status().get(name, {})
    return pid not in (None, old_pid) and row.get("state") == "up" and row.get("on_ring") is True


def keys_of(lb: RunningLB, name: str, count: int = 5) -> list[str]:
    keys: list[str] = []
    k = 0
    while len(keys) < count and k < 5000:
        if lb.serving(str(k)) == name:
            keys.append(str(k))
        k += 1
    return keys


@over_workers
def test_kill_9_under_load_no_failed_request_same_name_back(lb_factory: LBFactory, workers: str) -> None:
    lb = lb_factory(replicas="3", workers=workers)
    keys = [str(k) for k in range(60)]
    before = {k: lb.serving(k) for k in keys}
    victim = "Server 2"
    pid = replica_pids(lb)[victim]
    back_after = seconds_to_recover(
        lb.url,
        kill=lambda: os.kill(pid, signal.SIGKILL),
        recovered=lambda: serving_again(lb, victim, pid),
        timeout=10,
        new_connections=lb.workers > 1,
    )
    assert back_after < 2.0, f"replacement took {back_after:.2f}s"
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3"]
    assert {k: lb.serving(k) for k in keys} == before
    assert lb.status()[victim]["restarts"] == 1
    assert 'event=replacing replica="Server 2" reason="replica exited"' in lb.log()


def test_two_killed_at_once_and_repeated_kills_return_to_n(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="4")
    pids = replica_pids(lb)
    for name in ("Server 1", "Server 3"):
        os.kill(pids[name], signal.SIGKILL)
    for name in ("Server 1", "Server 3"):
        wait_until(partial(serving_again, lb, name, pids[name]), timeout=15)
    for _ in range(4):
        pid = replica_pids(lb)["Server 4"]
        os.kill(pid, signal.SIGKILL)
        wait_until(partial(serving_again, lb, "Server 4", pid), timeout=15)
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3", "Server 4"]
    assert len(replica_pids(lb)) == 4
    assert lb.status()["Server 4"]["restarts"] == 4


def test_crash_loop_backs_off_and_the_lb_stays_responsive(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2", replica_command=CRASHING_REPLICA, restart_backoff_max="2")
    assert lb.replicas() == ["Server 1", "Server 2"]  # desired membership, though none is up
    cpu_before, t0 = cpu_seconds(lb.proc.pid), time.monotonic()
    wait_until(lambda: all(r["failed_starts"] >= 4 for r in lb.status().values()), timeout=20)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(lb.proc.pid) - cpu_before
    status = lb.status()["Server 1"]
    # between attempts it waits in "backoff"; a sample may catch an attempt in "starting"
    assert status["state"] in ("backoff", "starting") and status["on_ring"] is False
    assert "exited during start-up" in status["last_error"]
    # back-off: 0.5 + 1 + 2 (capped) s between the first four attempts, so they cannot be instant
    assert elapsed >= 2.5
    assert cpu < 0.5 * elapsed, f"LB used {cpu:.2f}s CPU in {elapsed:.2f}s"
    response = lb.client.get("/home")
    assert response.status_code == 503 and response.json()["status"] == "failure"
    assert lb.client.get("/rep").status_code == 200


def test_removed_replica_is_not_respawned(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="3")
    lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["Server 2"]}).raise_for_status()
    probes = {name: row["last_probe"] for name, row in lb.status().items()}
    # let the monitor run several rounds
    wait_until(lambda: all(r["last_probe"] > probes[n] + 0.3 for n, r in lb.status().items()), timeout=10)
    assert lb.replicas() == ["Server 1", "Server 3"]
    assert set(replica_pids(lb)) == {"Server 1", "Server 3"}


def test_add_during_a_failure(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="3")
    pid = replica_pids(lb)["Server 1"]
    os.kill(pid, signal.SIGKILL)
    response = lb.client.post("/add", json={"n": 1, "hostnames": ["late"]})
    assert response.status_code == 200, response.text
    wait_until(lambda: serving_again(lb, "Server 1", pid), timeout=15)
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3", "late"]
    assert all(row["state"] == "up" for row in lb.status().values())


@over_workers
def test_hung_replica_is_detected_and_replaced_requests_never_hang(
    lb_factory: LBFactory, workers: str
) -> None:
    lb = lb_factory(replicas="3", read_timeout="1", heartbeat_timeout="0.2", workers=workers)
    victim = "Server 3"
    keys = keys_of(lb, victim)
    pid = replica_pids(lb)[victim]
    os.kill(pid, signal.SIGSTOP)  # the kernel still accepts connections; nothing answers
    try:
        codes = [lb.client.get("/home", params={"id": k}, timeout=5.0).status_code for k in keys]
        assert set(codes) <= {200, 504}, codes
        wait_until(lambda: serving_again(lb, victim, pid), timeout=20)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert [lb.serving(k) for k in keys] == [victim] * len(keys)
    assert 'event=down replica="Server 3" reason="2 failed heartbeats" detected_by=heartbeat' in lb.log()


def test_seed_behaviour_new_name_for_replacements(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="3", replacement_name="new")
    pid = replica_pids(lb)["Server 2"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "Server 2" not in lb.replicas() and len(lb.replicas()) == 3, timeout=15)
    wait_until(lambda: all(r["state"] == "up" for r in lb.status().values()), timeout=15)
    assert lb.replicas() == ["Server 1", "Server 3", "Server 4"]


@over_workers
def test_post_to_a_just_killed_replica_is_answered_by_another(lb_factory: LBFactory, workers: str) -> None:
    from tests.conftest import echo_command

    lb = lb_factory(replicas="3", replica_command=echo_command(), heartbeat_interval="5", workers=workers)
    victim = "Server 1"
    keys = [k for k in (str(i) for i in range(200)) if lb.serving(k) == victim][:5]
    os.kill(replica_pids(lb)[victim], signal.SIGKILL)
    for key in keys:  # the monitor sleeps 5 s: the proxy alone must notice (refused -> next replica)
        response = lb.client.post("/echo/order", params={"id": key}, content=b"pay 10")
        assert response.status_code == 200, response.text
        assert response.json()["body"] == "pay 10" and response.json()["server"] != victim
    # Whoever notices first takes it off the ring: the runtime (the process's exit) or the proxy (refused),
    # in the owner or in a worker process.
    down = re.compile(
        r'event=down replica="Server 1" reason="'
        r'(connection refused( \(seen by a worker\))?" detected_by=proxy|process exited" detected_by=runtime)'
    )
    wait_until(lambda: down.search(lb.log()))


def test_default_settings_detect_a_killed_idle_replica_within_a_second(lb_factory: LBFactory) -> None:
    from app.settings import Settings

    lb = lb_factory(replicas="2", heartbeat_interval=str(Settings.model_fields["heartbeat_interval"].default))
    pid = replica_pids(lb)["Server 1"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)  # no traffic: only the monitor can notice
    wait_until(lambda: lb.status()["Server 1"]["restarts"] >= 1, timeout=5)
    assert time.monotonic() - killed < 1.0
    wait_until(lambda: serving_again(lb, "Server 1", pid), timeout=10)
