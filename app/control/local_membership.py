"""Desired membership held by the LB itself (process and Docker runtimes).

LocalMembership decides *which* replicas exist: names, /add and /rm, the initial count, successors under
a new name. Each member's life is its own owner's (app.control.lifecycle); the membership only creates,
asks and forgets members, and rebuilds the routing table when an owner says a member entered or left UP.
/add and /rm are serialized by one asyncio.Lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.control.health import HealthMonitor, ProbeSchedule, probe_heartbeat
from app.control.lifecycle import Hooks, LifecyclePolicy, Prober, Replica, State
from app.control.naming import generate_names, natural_key
from app.control.routing import RoutingTable, RoutingTableHolder
from app.errors import (
    InvalidRequestError,
    LoadBalancerError,
    ReplicaExistsError,
    ReplicaStartError,
    UnknownReplicaError,
    quote,
)
from app.ring.base import HashStrategy
from app.runtimes.base import ReplicaHandle, Runtime
from app.runtimes.engine import TaskView
from app.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MembershipPolicy:
    """How the membership runs its members: their lifecycle, the probe schedule, the membership limits."""

    lifecycle: LifecyclePolicy
    schedule: ProbeSchedule
    max_replicas: int
    replacement_gets_new_name: bool = False  # the seed's behaviour; default: the dead replica's name

    @classmethod
    def from_settings(cls, settings: Settings) -> MembershipPolicy:
        """The membership's view of the settings."""
        return cls(
            LifecyclePolicy.from_settings(settings),
            ProbeSchedule.from_settings(settings),
            settings.max_replicas,
            settings.replacement_name == "new",
        )


class LocalMembership(Hooks):
    """Desired replicas, started through a runtime, routed through a hash strategy."""

    def __init__(
        self,
        runtime: Runtime[Any],
        strategy: HashStrategy,
        policy: MembershipPolicy,
        prober: Prober = probe_heartbeat,
    ) -> None:
        self.runtime = runtime
        self.strategy = strategy
        self.members: dict[str, Replica[Any]] = {}
        self.monitor = HealthMonitor(self.members.values, policy.schedule, prober)
        self._policy = policy.lifecycle
        self._prober = prober
        self._max_replicas = policy.max_replicas
        self._new_names = policy.replacement_gets_new_name
        self._routing = RoutingTableHolder(strategy)
        self._adding: dict[str, Replica[Any]] = {}  # started by an /add in flight, not members yet
        self._leaving: dict[Replica[Any], asyncio.Future[None]] = {}  # removed, draining or stopping
        self._lock = asyncio.Lock()
        self._seq = 0
        self._transition_observers: list[Callable[[str, State], object]] = []
        runtime.on_exit = self._on_exit

    # ----- reading ---------------------------------------------------------------------------------
    @property
    def table(self) -> RoutingTable:
        """The current routing table; the proxy reads it once per request."""
        return self._routing.table

    def names(self) -> list[str]:
        """Desired members in natural order (what /rep shows, whatever their health)."""
        return sorted(self.members, key=natural_key)

    def replicas(self) -> list[Replica[Any]]:
        """Members plus those still draining, in natural order."""
        draining = [m for m in self._leaving if m.state is State.DRAINING]
        everyone = [*self.members.values(), *draining]
        return sorted(everyone, key=lambda m: (natural_key(m.name), m.seq))

    def task(self, name: str) -> TaskView | None:
        """None: no engine holds this membership, so there is no task to show."""
        return None

    def subscribe(self, callback: Callable[[RoutingTable], object]) -> None:
        """Call `callback(table)` after every routing-table swap (e.g. to push it to workers)."""
        self._routing.subscribe(callback)

    # ----- reports, routed to the member's owner ---------------------------------------------------
    def report_failure(self, name: str, reason: str) -> None:
        """Passive detection: the proxy could not reach `name`."""
        member = self.members.get(name)
        if member is not None:
            member.report_refused(reason)

    def _on_exit(self, handle: ReplicaHandle) -> None:
        member = self.members.get(handle.name)
        if member is not None:
            member.report_exit(handle)

    # ----- Hooks: what members ask of the membership -----------------------------------------------
    def routing_changed(self, member: Replica[Any]) -> None:
        if self.members.get(member.name) is member:
            self._rebuild()

    def state_changed(self, member: Replica[Any], state: State) -> None:
        for callback in self._transition_observers:
            callback(member.name, state)

    def observe_transitions(self, callback: Callable[[str, State], object]) -> None:
        """Call `callback(name, state)` on every lifecycle transition of every member."""
        self._transition_observers.append(callback)

    def wake_monitor(self) -> None:
        self.monitor.wake()

    def successor_name(self, member: Replica[Any]) -> str | None:
        if not self._new_names or self.members.get(member.name) is not member:
            return None
        (name,) = generate_names(self.runtime.name_prefix, 1, self._taken())
        successor = self._new_member(name, restarts=member.restarts)
        del self.members[member.name]
        self.members[name] = successor
        successor.launch()
        return name

    # ----- membership ------------------------------------------------------------------------------
    async def start(self, initial: int) -> None:
        """Adopt replicas left by an earlier LB, start the rest, then start probing them."""
        async with self._lock:
            adopted = await self.runtime.adopt()
            boots = []
            for handle in adopted:
                member = self._new_member(handle.name)
                self.members[member.name] = member
                boots.append(member.boot(handle))
            for name in generate_names(self.runtime.name_prefix, initial - len(adopted), self._taken()):
                member = self._new_member(name)
                self.members[name] = member
                boots.append(member.boot())
            await asyncio.gather(*boots)  # failures back off and retry on their own
        self.monitor.start()

    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Start `n` replicas (given names first, generated for the rest); all or nothing."""
        if len(hostnames) > n:
            raise InvalidRequestError("Length of hostname list is more than newly added instances")
        async with self._lock:
            names = self._names_to_add(n, hostnames)
            await self._wait_left(names)  # a reused name may still be draining
            members = [self._new_member(name) for name in names]
            self._adding.update((m.name, m) for m in members)
            try:
                results = await asyncio.gather(*(m.start_once() for m in members), return_exceptions=True)
                errors = [r for r in results if isinstance(r, BaseException)]
                if errors:
                    await asyncio.gather(*(m.remove("/add failed", drain=False) for m in members))
                    raise self._add_error(names, errors[0])
            finally:
                for name in names:
                    self._adding.pop(name, None)
            self.members.update((m.name, m) for m in members)
            self._rebuild()
            logger.info("added %s; members now %s", names, self.names())
            return names

    async def remove(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Remove `n` replicas (given names first, then the newest); n beyond the count removes all.

        They leave the ring at once; requests in flight on them finish (up to the drain timeout) in
        the background before they stop, while /status shows them as draining.
        """
        if len(hostnames) > n:
            raise InvalidRequestError("Length of hostname list is more than removable instances")
        async with self._lock:
            victims = self._names_to_remove(n, hostnames)
            members = [self.members.pop(name) for name in victims]
            self._rebuild()  # traffic leaves them before they stop
            await self._retire(members)
            for member in members:
                self._hold_leaving(member, member.remove("DELETE /rm"))
            logger.info("removed %s; members now %s", victims, self.names())
            return victims

    # ----- reload ----------------------------------------------------------------------------------
    def retune(self, policy: MembershipPolicy) -> None:
        """Timeouts, rise/fall, back-off, the probe schedule and the member limit from now on (a reload).

        Members keep their state and connections; an engine that restarts replicas itself still does.
        """
        lifecycle = replace(policy.lifecycle, replaces_dead=self._policy.replaces_dead)
        self._policy = lifecycle
        self._max_replicas = policy.max_replicas
        self._new_names = policy.replacement_gets_new_name
        self.monitor.retune(policy.schedule)
        for member in {*self.members.values(), *self._adding.values(), *self._leaving}:
            member.retune(lifecycle)

    async def use_strategy(self, strategy: HashStrategy) -> None:
        """Route by `strategy` from now on: the ring is rebuilt over the same replicas and pushed to the
        subscribers (workers). ValueError, and nothing changed, if it cannot hold the current members."""
        async with self._lock:
            strategy.build([*self.members, *self._adding])  # e.g. slot rings hold at most 56 replicas
            self.strategy = self._routing.strategy = strategy
            self._rebuild()

    async def close(self) -> None:
        """LB shutdown: stop probing, cancel what is in flight, then let the runtime stop what it ran."""
        await self.monitor.stop()
        async with self._lock:
            members = [*self.members.values(), *self._adding.values()]
            self.members.clear()
            self._rebuild()
            leaving = list(self._leaving.values())
            for task in leaving:
                task.cancel()
            await asyncio.gather(*leaving, return_exceptions=True)
            await asyncio.gather(*(m.shutdown() for m in members))
            await self.runtime.close()

    # ----- internals -------------------------------------------------------------------------------
    async def _retire(self, members: Sequence[Replica[Any]]) -> None:
        """Hook between taking removed members off the ring and draining them (none here)."""

    def _rebuild(self) -> None:
        up = {m.name: m.upstream for m in self.members.values() if m.state is State.UP and m.upstream}
        self._routing.rebuild(up)

    def _new_member(self, name: str, restarts: int = 0) -> Replica[Any]:
        self._seq += 1
        return Replica(name, self._seq, self.runtime, self._policy, self._prober, self, restarts)

    def _taken(self) -> set[str]:
        return {*self.members, *self._adding}

    def _hold_leaving(self, member: Replica[Any], task: asyncio.Future[None]) -> None:
        self._leaving[member] = task
        task.add_done_callback(lambda _: self._leaving.pop(member, None))

    async def _wait_left(self, names: Sequence[str]) -> None:
        wanted = set(names)
        pending = [task for member, task in self._leaving.items() if member.name in wanted]
        await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    def _add_error(names: list[str], first: BaseException) -> BaseException:
        if isinstance(first, LoadBalancerError) and not isinstance(first, ReplicaStartError):
            return first  # e.g. a foreign container holds the name: 409, as the user's error
        if not isinstance(first, Exception):
            return first
        reason = first.message if isinstance(first, ReplicaStartError) else repr(first)
        return ReplicaStartError(f"Could not add {names}: {reason}; nothing was changed")

    def _names_to_add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        _refuse_duplicates(hostnames)
        for name in hostnames:
            self.runtime.check_name(name)
            if name in self._taken():
                raise ReplicaExistsError(f"Replica name {quote(name)} is already in use")
        if len(self.members) + n > self._max_replicas:
            raise InvalidRequestError(
                f"Cannot add {n} replicas: at most {self._max_replicas} are allowed ({len(self.members)} now)"
            )
        generated = generate_names(self.runtime.name_prefix, n - len(hostnames), {*self._taken(), *hostnames})
        names = [*hostnames, *generated]
        try:
            self.strategy.build([*self.members, *names])  # e.g. slot rings hold at most 56 replicas
        except ValueError as exc:
            raise InvalidRequestError(
                f"Cannot add {n} replicas with strategy {self.strategy.name}: {exc}"
            ) from exc
        return names

    def _names_to_remove(self, n: int, hostnames: Sequence[str]) -> list[str]:
        _refuse_duplicates(hostnames)
        unknown = [name for name in hostnames if name not in self.members]
        if unknown:
            raise UnknownReplicaError(
                f"Replica name {quote(unknown[0])} is not a member; members are {self.names()}"
            )
        others = sorted(
            (m for m in self.members.values() if m.name not in hostnames), key=lambda m: m.seq, reverse=True
        )
        extra = [m.name for m in others[: max(0, n - len(hostnames))]]
        return [*hostnames, *extra]


def _refuse_duplicates(hostnames: Sequence[str]) -> None:
    if len(set(hostnames)) != len(hostnames):
        raise InvalidRequestError(f"Duplicate names in hostname list: {quote(list(hostnames))}")
