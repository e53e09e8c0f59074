"""GET /readyz on a real LB: 503 naming what it waits for while a replica starts, 200 once all are routable.

The image's health check script (scripts/lb-healthcheck.py) is run here against the same LB.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.lb_support import LBFactory, RunningLB, replica_pids
from tests.polling import wait_until

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def frozen() -> Iterator[list[int]]:
    """Pids a test froze with SIGSTOP: resumed at the end, so the LB's stop (SIGTERM) ends them."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)  # replaced by the LB already: nobody else stops it


def freeze(pids: list[int], pid: int) -> None:
    pids.append(pid)
    os.kill(pid, signal.SIGSTOP)


def readyz(lb: RunningLB) -> httpx.Response:
    return lb.client.get("/readyz")


def all_on_ring(lb: RunningLB) -> bool:
    return all(row["on_ring"] for row in lb.status().values())


def test_ready_only_while_every_replica_is_on_the_ring(lb_factory: LBFactory, frozen: list[int]) -> None:
    lb = lb_factory(replicas="3")
    wait_until(lambda: all_on_ring(lb), timeout=10)
    assert readyz(lb).json() == {"message": "ready: 3 replicas on the ring", "status": "successful"}
    victim = "Server 2"
    # Frozen, not killed: its heartbeats time out, it leaves the ring and a replacement starts.
    freeze(frozen, replica_pids(lb)[victim])
    def not_ready() -> httpx.Response | None:
        response = readyz(lb)
        return response if response.status_code == 503 else None

    seen = wait_until(not_ready, timeout=10)
    assert seen is not None
    assert seen.json()["status"] == "failure"
    assert seen.json()["message"].startswith(f"<Error> Not ready: waiting for {victim} (")
    assert "Server 1" not in seen.json()["message"] and "Server 3" not in seen.json()["message"]
    assert lb.client.get("/healthz").status_code == 200  # liveness is not readiness
    wait_until(lambda: readyz(lb).status_code == 200, timeout=20)
    assert all_on_ring(lb) and sorted(lb.status()) == ["Server 1", "Server 2", "Server 3"]


def test_a_replica_backing_off_after_failed_starts_does_not_hold_readiness(lb_factory: LBFactory) -> None:
    # Every start fails (the command exits at once): the members back off, and nothing else is waited for.
    lb = lb_factory(replicas="2", replica_command=[sys.executable, "-c", "raise SystemExit(3)"])
    wait_until(lambda: {row["state"] for row in lb.status().values()} == {"backoff"}, timeout=30)
    assert readyz(lb).status_code == 200


def test_the_image_health_check_waits_for_ready_then_checks_liveness(
    lb_factory: LBFactory, tmp_path: Path, frozen: list[int]
) -> None:
    lb = lb_factory(replicas="2")
    mark = tmp_path / "ready-mark"

    def check() -> int:
        env = {**os.environ, "LB_PORT": str(lb.port), "LB_HEALTHCHECK_MARK": str(mark)}
        script = ROOT / "scripts" / "lb-healthcheck.py"
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=10)
        return done.returncode

    freeze(frozen, replica_pids(lb)["Server 1"])
    wait_until(lambda: readyz(lb).status_code == 503, timeout=10)
    assert check() == 1 and not mark.exists()  # not ready yet: unhealthy
    wait_until(lambda: readyz(lb).status_code == 200, timeout=20)
    assert check() == 0 and mark.exists()
    freeze(frozen, replica_pids(lb)["Server 2"])
    wait_until(lambda: readyz(lb).status_code == 503, timeout=10)
    assert check() == 0  # ready once: a replica down later does not make the LB unhealthy
