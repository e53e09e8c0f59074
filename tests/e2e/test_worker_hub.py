"""WorkerHub with real children: a worker that keeps dying is restarted ever more slowly, never after stop."""

from __future__ import annotations

import logging
import sys

import pytest

from app.dataplane.hub import WorkerHub, describe_exit
from tests.fake_runtime import FakeRuntime, GatedProber, make_membership
from tests.lb_support import alive
from tests.polling import eventually

pytestmark = pytest.mark.anyio

CRASHES = [sys.executable, "-c", "raise SystemExit(3)"]  # a worker that dies at once, every time
LIVES = [sys.executable, "-c", "import time; time.sleep(60)"]  # one that serves until told to stop


def make_hub(command: list[str], delays: list[float]) -> WorkerHub:
    def backoff(quick_exits: int) -> float:
        delays.append(0.05 * 2 ** (quick_exits - 1))
        return delays[-1]

    membership = make_membership(FakeRuntime(), GatedProber())
    return WorkerHub(membership, 2, "127.0.0.1:9", backoff=backoff, command=command)


async def test_a_crash_looping_worker_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app.dataplane.hub")
    delays: list[float] = []
    hub = make_hub(CRASHES, delays)
    await hub.start()
    try:
        await eventually(lambda: hub.workers[0].restarts >= 4, timeout=30)
    finally:
        await hub.stop()
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]  # each quick exit doubles the wait
    assert "data-plane worker 1 (pid " in caplog.text
    assert "exited with code 3; restarting it in 0.1 s (restart 2)" in caplog.text


async def test_stop_restarts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="app.dataplane.hub")
    delays: list[float] = []
    hub = make_hub(LIVES, delays)
    await hub.start()
    (worker,) = hub.workers
    pid = worker.pid
    assert pid is not None and alive(pid)
    await hub.stop()
    assert not alive(pid)
    assert (worker.restarts, delays, worker.pending) == (0, [], None)
    assert "restarting" not in caplog.text


def test_exits_are_described_as_operators_read_them() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(-200) == "was killed by signal 200"
