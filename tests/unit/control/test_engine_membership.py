"""Engine-held membership in process: two LB instances over one in-memory engine (no Docker, no socket).

The fake engine holds services by unique name, restarts nothing on its own (the test does), and tells
every watching instance of a change the way Swarm's event stream does: a signal, then a fresh listing.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.control.engine_membership import EngineMembership
from app.control.health import ProbeSchedule
from app.control.lifecycle import Replica, State
from app.control.local_membership import MembershipPolicy
from app.errors import InvalidRequestError, PeerCreatedError
from app.ring import RendezvousStrategy
from app.runtimes.base import ReplicaHandle
from app.runtimes.engine import TaskView
from tests.fake_runtime import make_policy
from tests.polling import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]  # the one async runner, bounded


@dataclass(eq=False)
class EngineHandle(ReplicaHandle):
    service_id: int = 0


@dataclass
class FakeEngine:
    """Services by name (ids never reused); `healthy` is what a service's task answers to heartbeats."""

    services: dict[str, int] = field(default_factory=dict)
    healthy: dict[int, bool] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # successful creates, in order
    watchers: list[FakeEngineRuntime] = field(default_factory=list)
    instances: list[EngineMembership] = field(default_factory=list)  # every LB instance made over it
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def create(self, name: str) -> int | None:
        """The new service's id, or None when the name is taken (Swarm's 409)."""
        if name in self.services:
            return None
        sid = self.services[name] = next(self._ids)
        self.healthy[sid] = True
        self.created.append(name)
        self._changed()
        return sid

    def remove(self, sid: int) -> None:
        for name, known in list(self.services.items()):
            if known == sid:
                del self.services[name]
                self._changed()

    def kill_task(self, name: str) -> None:
        """The task's container dies: watchers get a die report; it stays down until `restart_task`."""
        sid = self.services[name]
        self.healthy[sid] = False
        for runtime in self.watchers:
            runtime.task_died(sid)

    def restart_task(self, name: str) -> None:
        self.healthy[self.services[name]] = True
        self._changed()

    def _changed(self) -> None:
        for runtime in self.watchers:
            if runtime.on_change is not None:
                asyncio.get_running_loop().call_soon(runtime.on_change)


@dataclass
class FakeEngineRuntime:
    """One LB instance's EngineRuntime over the shared fake engine."""

    engine: FakeEngine
    kind: str = "fake-engine"
    name_prefix: str = "r"
    on_exit: Callable[[EngineHandle], object] | None = None
    on_change: Callable[[], object] | None = None
    handles: dict[int, EngineHandle] = field(default_factory=dict)

    def check_name(self, name: str) -> None:
        if not name:
            raise InvalidRequestError("empty name")

    async def start(self, name: str) -> EngineHandle:
        await asyncio.sleep(0)  # an engine call: other instances run meanwhile
        sid = self.engine.create(name)
        if sid is None:
            raise PeerCreatedError(f"Replica name '{name}' is already in use")
        return self._handle(name, sid)

    async def stop(self, handle: EngineHandle) -> None:
        self.handles.pop(handle.service_id, None)
        self.engine.remove(handle.service_id)

    def exited(self, handle: EngineHandle) -> bool:
        return False

    async def adopt(self) -> list[EngineHandle]:
        return [h for h, _ in (await self.list_replicas()).values()]

    async def close(self) -> None:
        if self in self.engine.watchers:
            self.engine.watchers.remove(self)

    async def watch(self) -> None:
        self.engine.watchers.append(self)

    async def list_replicas(self) -> dict[str, tuple[EngineHandle, TaskView | None]]:
        await asyncio.sleep(0)
        return {
            name: (self._handle(name, sid), TaskView("running", "running"))
            for name, sid in self.engine.services.items()
        }

    def task_died(self, sid: int) -> None:
        handle = self.handles.get(sid)
        if handle is not None and self.on_exit is not None:
            self.on_exit(handle)

    def _handle(self, name: str, sid: int) -> EngineHandle:
        if sid not in self.handles:
            self.handles[sid] = EngineHandle(name=name, host="engine", port=sid, service_id=sid)
        return self.handles[sid]


def prober_for(engine: FakeEngine) -> Callable[[Replica[Any]], Any]:
    async def probe(member: Replica[Any]) -> bool:
        handle = member.handle
        return isinstance(handle, EngineHandle) and engine.healthy.get(handle.service_id, False)

    return probe


def instance(engine: FakeEngine) -> EngineMembership:
    """One LB instance's membership: probes every 5 ms, resyncs at least every 50 ms."""
    policy = MembershipPolicy(make_policy(), ProbeSchedule(interval=0.005, jitter=0.0), max_replicas=10)
    lb = EngineMembership(
        FakeEngineRuntime(engine), RendezvousStrategy(), policy, prober_for(engine), resync_interval=0.05
    )
    engine.instances.append(lb)
    return lb


def over_one_engine(test: Callable[[FakeEngine], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """The test `test(engine)` over a new engine; every LB instance it made is closed afterwards."""

    async def run() -> None:
        engine = FakeEngine()
        try:
            await test(engine)
        finally:
            await asyncio.gather(*(lb.close() for lb in engine.instances))

    # not functools.wraps: pytest would read `engine` from the wrapped signature as a fixture
    run.__name__, run.__qualname__, run.__doc__ = test.__name__, test.__qualname__, test.__doc__
    return run


async def two_instances(engine: FakeEngine, initial: int) -> tuple[EngineMembership, EngineMembership]:
    """Two LB instances over the engine, started one after the other."""
    a, b = instance(engine), instance(engine)
    await a.start(initial)
    await b.start(initial)
    return a, b


def up(*instances: EngineMembership) -> Callable[[], bool]:
    """Every instance has every member up (so their rings are built from the same names)."""
    return lambda: all(m.state is State.UP for i in instances for m in i.replicas())


def same_routes(a: EngineMembership, b: EngineMembership, keys: int = 2000) -> bool:
    return all(a.table.ring.lookup(str(k)) == b.table.ring.lookup(str(k)) for k in range(keys))


@over_one_engine
async def test_two_instances_starting_together_create_the_initial_replicas_once(engine: FakeEngine) -> None:
    a, b = instance(engine), instance(engine)
    await asyncio.gather(a.start(3), b.start(3))
    assert sorted(engine.created) == ["r1", "r2", "r3"]
    assert a.names() == b.names() == ["r1", "r2", "r3"]
    await eventually(up(a, b))
    assert same_routes(a, b)
    assert sorted(engine.services) == ["r1", "r2", "r3"]  # closing an instance leaves the engine's replicas


@over_one_engine
async def test_add_and_rm_through_one_instance_converge_on_the_other(engine: FakeEngine) -> None:
    a, b = await two_instances(engine, 2)
    assert await a.add(1, ["x"]) == ["x"]
    await eventually(lambda: b.names() == ["r1", "r2", "x"], timeout=1.0)
    await eventually(up(a, b))
    assert same_routes(a, b)
    assert await b.remove(1, ["r1"]) == ["r1"]
    assert "r1" not in engine.services  # removed in the engine at once, not after a drain
    await eventually(lambda: a.names() == ["r2", "x"], timeout=1.0)
    assert same_routes(a, b)


@over_one_engine
async def test_a_dead_task_goes_down_on_every_instance_and_only_the_engine_restarts_it(
    engine: FakeEngine,
) -> None:
    a, b = await two_instances(engine, 3)
    await eventually(up(a, b))
    engine.kill_task("r2")
    for lb in (a, b):
        assert lb.members["r2"].state is State.DOWN  # the die report takes it off the ring at once
        assert "r2" not in lb.table.upstreams
    # Ten failed heartbeats each (five times `fall`): still down, never replaced.
    await eventually(lambda: all(lb.members["r2"].fails >= 10 for lb in (a, b)))
    for lb in (a, b):
        assert lb.members["r2"].state is State.DOWN
        assert lb.members["r2"].restarts == 0
    assert engine.created == ["r1", "r2", "r3"]
    engine.restart_task("r2")
    await eventually(up(a, b))
    assert same_routes(a, b)


@over_one_engine
async def test_each_member_shows_the_engines_view_of_its_task(engine: FakeEngine) -> None:
    lb = instance(engine)
    await lb.start(2)
    assert lb.task("r1") == TaskView("running", "running")  # what /status shows under "task"
    assert lb.task("unknown") is None


@over_one_engine
async def test_failing_heartbeats_alone_take_a_member_down_without_a_replacement(engine: FakeEngine) -> None:
    lb = instance(engine)
    await lb.start(2)
    await eventually(up(lb))
    engine.healthy[engine.services["r1"]] = False  # hung: no die report, heartbeats fail
    await eventually(lambda: lb.members["r1"].state is State.DOWN)
    assert lb.members["r1"].last_error == "2 failed heartbeats"
    assert engine.created == ["r1", "r2"]


@over_one_engine
async def test_an_instance_that_restarts_reads_the_membership_back_and_creates_nothing(
    engine: FakeEngine,
) -> None:
    first = instance(engine)
    await first.start(3)
    await first.remove(1, ["r3"])
    await first.close()
    again = instance(engine)
    await again.start(3)  # the cluster has replicas: LB_REPLICAS only sizes a new cluster
    assert again.names() == ["r1", "r2"]
    assert engine.created == ["r1", "r2", "r3"]


@over_one_engine
async def test_a_service_recreated_under_the_same_name_is_a_new_member(engine: FakeEngine) -> None:
    lb = instance(engine)
    await lb.start(1)
    await eventually(up(lb))
    old = lb.members["r1"]
    engine.remove(engine.services["r1"])
    engine.create("r1")
    await eventually(lambda: lb.members.get("r1") not in (None, old))
    await eventually(up(lb))
    assert old.state is State.REMOVED


@over_one_engine
async def test_concurrent_adds_through_two_instances_never_count_one_replica_twice(
    engine: FakeEngine,
) -> None:
    a, b = await two_instances(engine, 2)
    results = await asyncio.gather(a.add(1, []), b.add(1, []), return_exceptions=True)
    added = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, PeerCreatedError)]
    assert (added, len(refused)) == ([["r3"]], 1)  # both picked r3; the engine made it once: a 409
    assert engine.created == ["r1", "r2", "r3"]
    await eventually(lambda: a.names() == b.names() == ["r1", "r2", "r3"], timeout=1.0)
