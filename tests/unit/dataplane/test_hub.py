"""LB_WORKERS: a removed replica stops only once every process has finished its requests to it.

A real WorkerHub (the owner's side) and a real RemoteRouting (a worker's side) talk over the hub's unix
socket, in one event loop; the owner's pool runs on the fake runtime. A request in flight is its
upstream pool's counter, as in the lifecycle tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from app.control.lifecycle import State
from app.control.local_membership import LocalMembership
from app.dataplane.hub import WorkerHub
from app.dataplane.worker import RemoteRouting
from app.settings import Settings
from tests.fake_runtime import FakeRuntime, GatedProber, make_membership
from tests.polling import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]  # the one async runner, bounded


@dataclass
class Owner:
    pool: LocalMembership
    runtime: FakeRuntime
    hub: WorkerHub


@asynccontextmanager
async def owner_with_hub(**policy: float) -> AsyncIterator[Owner]:
    """Two replicas on the fake runtime and a hub with no worker process of its own (count=1)."""
    runtime = FakeRuntime()
    pool = make_membership(runtime, GatedProber(), new_names=False, **policy)
    await pool.start(2)
    hub = WorkerHub(pool, 1, "127.0.0.1:9", backoff=lambda quick_exits: 0.1)
    await hub.start()
    try:
        yield Owner(pool, runtime, hub)
    finally:
        await hub.stop()
        await pool.close()


@asynccontextmanager
async def worker(hub: WorkerHub) -> AsyncIterator[RemoteRouting]:
    """A worker's routing, following the owner's tables as the worker process does."""
    reader, writer = await asyncio.open_unix_connection(str(hub.control_path))
    routing = RemoteRouting(Settings(_env_file=None), writer)
    follower = asyncio.create_task(routing.follow(reader))
    try:
        await eventually(lambda: set(routing.table.upstreams) == {"r1", "r2"})
        yield routing
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        writer.close()


def state(owner: Owner, name: str) -> State | None:
    return next((m.state for m in owner.pool.replicas() if m.name == name), None)


async def test_a_removed_replica_waits_for_a_workers_requests() -> None:
    async with owner_with_hub() as owner, worker(owner.hub) as routing:
        in_worker = routing.table.upstreams["r1"]
        in_worker.in_flight = 1  # a request the worker sent to r1; the owner itself has none
        assert await owner.pool.remove(1, ["r1"]) == ["r1"]
        await eventually(lambda: "r1" not in routing.table.upstreams)  # no new requests go there
        assert state(owner, "r1") is State.DRAINING and owner.runtime.instances_of("r1")
        await asyncio.sleep(0.1)  # the drain must not end on its own while the request lasts
        assert state(owner, "r1") is State.DRAINING and owner.runtime.instances_of("r1")
        in_worker.in_flight = 0  # answered
        await eventually(lambda: state(owner, "r1") is None and not owner.runtime.instances_of("r1"))


async def test_with_nothing_in_flight_anywhere_removal_is_immediate() -> None:
    drain_timeout = 4.0
    async with owner_with_hub(drain_timeout=drain_timeout) as owner, worker(owner.hub):
        await owner.pool.remove(1, ["r2"])
        # Done in a fraction of the drain timeout: a removal that waited it out would still be draining.
        await eventually(
            lambda: state(owner, "r2") is None and not owner.runtime.instances_of("r2"),
            timeout=drain_timeout / 4,
        )


async def test_the_drain_timeout_bounds_the_wait_for_workers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    drain_timeout = 0.5
    async with owner_with_hub(drain_timeout=drain_timeout) as owner, worker(owner.hub) as routing:
        routing.table.upstreams["r2"].in_flight = 1  # never answered
        loop = asyncio.get_running_loop()
        removed_at = loop.time()
        await owner.pool.remove(1, ["r2"])
        # Not before the bound (the request might still finish), and not long past it.
        await eventually(
            lambda: state(owner, "r2") is None and not owner.runtime.instances_of("r2"),
            timeout=drain_timeout * 4,
        )
        assert loop.time() - removed_at >= drain_timeout
    warning = "replica r2: 1 worker processes still had requests in flight after the drain timeout"
    assert warning in caplog.text


async def test_a_worker_that_goes_away_stops_holding_the_drain() -> None:
    async with owner_with_hub(drain_timeout=5.0) as owner:
        async with worker(owner.hub) as routing:
            routing.table.upstreams["r1"].in_flight = 1
            await owner.pool.remove(1, ["r1"])
            await eventually(lambda: "r1" not in routing.table.upstreams)
            assert state(owner, "r1") is State.DRAINING
        # its connection closed (the process died, and its requests with it): nothing left to wait for
        await eventually(lambda: state(owner, "r1") is None and not owner.runtime.instances_of("r1"))
