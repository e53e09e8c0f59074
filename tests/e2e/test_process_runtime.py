"""ProcessRuntime in process: real replica children, their exits reported the moment they happen."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest

from app.runtimes.process import EXEC_REPLICA, ProcessHandle, ProcessRuntime
from tests.lb_support import alive
from tests.polling import eventually

pytestmark = pytest.mark.anyio


async def serving(handle: ProcessHandle) -> bool:
    try:
        async with httpx.AsyncClient(timeout=0.5) as client:
            return (await client.get(f"http://{handle.address}/heartbeat")).status_code == 200
    except httpx.HTTPError:
        return False


async def wait_serving(handle: ProcessHandle) -> None:
    for _ in range(500):  # bounded: 500 polls of at most 0.5 s each, usually a few
        if await serving(handle):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{handle.name} never served")


@pytest.mark.parametrize("command", [None, EXEC_REPLICA], ids=["forked", "exec"])
async def test_exit_is_reported_at_once_and_a_stop_is_not(command: list[str] | None) -> None:
    runtime = ProcessRuntime(command=command)
    exits: list[ProcessHandle] = []
    runtime.on_exit = exits.append
    try:
        victim, kept = await asyncio.gather(runtime.start("victim"), runtime.start("kept"))
        await asyncio.gather(wait_serving(victim), wait_serving(kept))
        await runtime.stop(kept)  # a deliberate stop is not an exit to report
        assert victim.pid is not None and kept.pid is not None and not alive(kept.pid)
        os.kill(victim.pid, signal.SIGKILL)
        await eventually(lambda: exits == [victim], timeout=2)  # no heartbeat involved
        await eventually(lambda: runtime.exited(victim), timeout=2)
    finally:
        await runtime.close()
    assert exits == [victim]


async def test_close_stops_every_child() -> None:
    runtime = ProcessRuntime()
    handles = await asyncio.gather(*(runtime.start(f"s{i}") for i in range(3)))
    await asyncio.gather(*(wait_serving(h) for h in handles))
    pids = [h.pid for h in handles]
    await runtime.close()
    assert all(pid is not None and not alive(pid) for pid in pids)
    assert all(runtime.exited(h) for h in handles)
