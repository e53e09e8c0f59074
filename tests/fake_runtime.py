"""A runtime with no processes: instances are objects the test starts, kills, gates and heals at will."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.control.health import ProbeSchedule
from app.control.lifecycle import LifecyclePolicy, Replica
from app.control.local_membership import LocalMembership, MembershipPolicy
from app.errors import InvalidRequestError, ReplicaStartError
from app.ring import RendezvousStrategy
from app.runtimes.base import ReplicaHandle


@dataclass(eq=False)
class FakeHandle(ReplicaHandle):
    """One instance; `healthy` is what its heartbeat answers."""

    instance: int = 0
    healthy: bool = True
    alive: bool = True


@dataclass
class FakeRuntime:
    """Runtime[FakeHandle] in memory. `start_gate` holds starts; `failing_starts` makes starts fail."""

    kind: str = "fake"
    name_prefix: str = "r"
    on_exit: Callable[[FakeHandle], object] | None = None
    start_gate: asyncio.Event | None = None
    failing_starts: dict[str, int] = field(default_factory=dict)  # name -> starts that still fail
    starts: list[str] = field(default_factory=list)  # every start asked for, in order
    running: dict[int, FakeHandle] = field(default_factory=dict)  # instance -> handle, not yet stopped
    closed: bool = False
    _next: int = 0

    def check_name(self, name: str) -> None:
        if not name:
            raise InvalidRequestError("empty name")

    async def start(self, name: str) -> FakeHandle:
        self.starts.append(name)
        if self.start_gate is not None:
            await self.start_gate.wait()
        if self.failing_starts.get(name, 0) > 0:
            self.failing_starts[name] -= 1
            raise ReplicaStartError(f"replica '{name}' exited during start-up")
        self._next += 1
        handle = FakeHandle(name=name, host="fake", port=self._next, instance=self._next)
        self.running[handle.instance] = handle
        return handle

    async def stop(self, handle: FakeHandle) -> None:
        handle.alive = False
        self.running.pop(handle.instance, None)

    def exited(self, handle: FakeHandle) -> bool:
        return not handle.alive

    async def adopt(self) -> list[FakeHandle]:
        return []

    async def close(self) -> None:
        self.closed = True
        for handle in list(self.running.values()):
            await self.stop(handle)

    # ----- what the test does to instances -----------------------------------------------------
    def instances_of(self, name: str) -> list[FakeHandle]:
        """Instances of `name` that were started and not stopped."""
        return [h for h in self.running.values() if h.name == name]

    def kill(self, name: str, report: bool = True) -> FakeHandle:
        """The instance of `name` dies; the runtime tells its owner at once unless `report` is False."""
        (handle,) = self.instances_of(name)
        handle.alive = False
        handle.healthy = False
        self.running.pop(handle.instance)
        if report and self.on_exit is not None:
            self.on_exit(handle)
        return handle


class GatedProber:
    """Answers heartbeats from the fake instances; `hold()` keeps probes in flight until `release()`."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.in_flight = 0

    def hold(self) -> None:
        self.gate = asyncio.Event()

    def release(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def __call__(self, member: Replica[Any]) -> bool:
        handle = member.handle
        gate = self.gate
        if gate is not None:
            self.in_flight += 1
            try:
                await gate.wait()
            finally:
                self.in_flight -= 1
        return isinstance(handle, FakeHandle) and handle.alive and handle.healthy


def make_policy(**overrides: Any) -> LifecyclePolicy:
    """Fast timings for in-process tests."""
    values: dict[str, Any] = {
        "rise": 2,
        "fall": 2,
        "connect_timeout": 0.1,
        "read_timeout": 0.1,
        "max_idle": 1,
        "heartbeat_timeout": 0.1,
        "start_timeout": 1.0,
        "restart_backoff_max": 0.08,
        "drain_timeout": 1.0,
        "restart_backoff_base": 0.01,
        "start_poll": 0.001,
    }
    values.update(overrides)
    return LifecyclePolicy(**values)


def make_membership(
    runtime: FakeRuntime, prober: GatedProber, *, new_names: bool = False, **policy: Any
) -> LocalMembership:
    """A LocalMembership over the fake runtime; the monitor probes every 5 ms."""
    schedule = ProbeSchedule(interval=0.005, jitter=0.0)
    membership_policy = MembershipPolicy(
        make_policy(**policy), schedule, max_replicas=10, replacement_gets_new_name=new_names
    )
    return LocalMembership(runtime, RendezvousStrategy(), membership_policy, prober)
