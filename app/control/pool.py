"""The replica pool: desired membership, per-replica health, and the routing table the proxy reads.

This is the only mutable shared state. The proxy reads `pool.table` (one attribute, swapped whole on
every change), so it never sees a half-built ring and takes no lock. Membership changes (/add, /rm)
are serialized by one asyncio.Lock; health transitions and replacements come from app.control.health.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from app.control.events import log_event
from app.dataplane.upstream import UpstreamError, UpstreamPool
from app.errors import (
    InvalidRequestError,
    LoadBalancerError,
    ReplicaExistsError,
    ReplicaStartError,
    UnknownReplicaError,
)
from app.metrics import Stats
from app.ring import HashStrategy, Ring
from app.runtimes.base import Orchestrator, ReplicaHandle

logger = logging.getLogger(__name__)

_HEARTBEAT_TARGET = b"/heartbeat"
_START_POLL_SECONDS = 0.02


class State(StrEnum):
    """Where a member is in its life; only UP members are on the ring."""

    STARTING = "starting"
    UP = "up"
    DOWN = "down"


@dataclass(eq=False)
class Member:
    """One desired replica and what the LB knows about its health."""

    name: str
    seq: int  # order of addition: /rm without names removes the newest first
    handle: ReplicaHandle | None = None
    upstream: UpstreamPool | None = None
    probe: UpstreamPool | None = None
    state: State = State.DOWN
    fails: int = 0
    oks: int = 0
    last_probe: float | None = None  # wall-clock time of the last heartbeat probe
    restarts: int = 0
    attempts: int = 0  # consecutive failed starts, drives the back-off
    next_start: float = 0.0  # monotonic time before which no new start is tried
    last_error: str | None = None
    busy: bool = field(default=False, repr=False)  # a start/replacement task owns this member


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """What the proxy needs per request: the ring over UP members and their connection pools."""

    ring: Ring
    upstreams: dict[str, UpstreamPool]


@dataclass(frozen=True)
class PoolLimits:
    """Timeouts, caps and replacement policy the pool applies to replicas it starts."""

    connect_timeout: float = 0.5
    read_timeout: float = 10.0
    max_idle: int = 64
    heartbeat_timeout: float = 0.3
    start_timeout: float = 20.0
    max_replicas: int = 50
    restart_backoff_base: float = 0.5
    restart_backoff_max: float = 30.0
    replacement_gets_new_name: bool = False  # the seed's behaviour; default: the dead replica's name


def _address(member: Member) -> str | None:
    return member.handle.address if member.handle else None


def natural_key(name: str) -> list[int | str]:
    """Sort "Server 2" before "Server 10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class ReplicaPool:
    """Desired replicas, started through an orchestrator, routed through a hash strategy."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        strategy: HashStrategy,
        limits: PoolLimits,
        stats: Stats | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.stats = stats or Stats()  # ring rebuilds (and, from the lifecycle, health transitions)
        self.strategy = strategy
        self.limits = limits
        self.members: dict[str, Member] = {}
        self.table = RoutingTable(strategy.build([]), {})
        self.changed = asyncio.Event()  # set on passive failures so the monitor probes at once
        self._lock = asyncio.Lock()
        self._seq = 0
        orchestrator.on_exit = self._on_exit

    def _on_exit(self, handle: ReplicaHandle) -> None:
        """The backend saw a replica die: wake the monitor now rather than at its next round."""
        member = self.members.get(handle.name)
        if member is not None and member.handle is handle:
            self.report_failure(handle.name, "replica exited")
            self.changed.set()

    # ----- reading -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Desired members in natural order (what /rep shows, whatever their health)."""
        return sorted(self.members, key=natural_key)

    # ----- routing table -----------------------------------------------------------------------
    def rebuild(self) -> None:
        """Swap in a new ring over the UP members; called after every health or membership change."""
        up = {m.name: m.upstream for m in self.members.values() if m.state is State.UP and m.upstream}
        self.table = RoutingTable(self.strategy.build(list(up)), up)
        self.stats.ring_rebuilt()

    def report_failure(self, name: str, reason: str) -> None:
        """Passive detection: the proxy could not reach `name`; take it off the ring now, probe soon."""
        member = self.members.get(name)
        if member is None or member.state is not State.UP:
            return
        member.state = State.DOWN
        member.oks = 0
        member.last_error = reason
        log_event(logging.WARNING, "down", name, reason=reason, detected_by="proxy")
        self.rebuild()
        self.changed.set()

    # ----- membership --------------------------------------------------------------------------
    async def add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Start `n` replicas (given names first, generated for the rest); all or nothing."""
        if len(hostnames) > n:
            raise InvalidRequestError("Length of hostname list is more than newly added instances")
        async with self._lock:
            names = self._names_to_add(n, hostnames)
            members = [self._new_member(name) for name in names]
            results = await asyncio.gather(*(self._start(m) for m in members), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await asyncio.gather(*(self._stop(m) for m in members))
                first = errors[0]
                if isinstance(first, LoadBalancerError) and not isinstance(first, ReplicaStartError):
                    raise first  # e.g. a foreign container holds the name: 409, as the user's error
                if not isinstance(first, Exception):
                    raise first
                reason = first.message if isinstance(first, ReplicaStartError) else repr(first)
                raise ReplicaStartError(f"Could not add {names}: {reason}; nothing was changed")
            for member in members:
                member.state = State.UP
                self.members[member.name] = member
                log_event(logging.INFO, "up", member.name, address=_address(member))
            self.rebuild()
            logger.info("added %s; members now %s", names, self.names())
            return names

    async def remove(self, n: int, hostnames: Sequence[str]) -> list[str]:
        """Stop `n` replicas (given names first, then the newest); n beyond the count removes all."""
        if len(hostnames) > n:
            raise InvalidRequestError("Length of hostname list is more than removable instances")
        async with self._lock:
            victims = self._names_to_remove(n, hostnames)
            members = [self.members.pop(name) for name in victims]
            for name in victims:
                log_event(logging.INFO, "removed", name, reason="DELETE /rm")
            self.rebuild()  # traffic leaves them before they stop
            await asyncio.gather(*(self._stop(m) for m in members))
            logger.info("removed %s; members now %s", victims, self.names())
            return victims

    async def start_initial(self, count: int) -> None:
        """Adopt replicas left by an earlier LB, then start the rest; failures go to the monitor's retries."""
        async with self._lock:
            for handle in await self.orchestrator.adopt():
                member = self._new_member(handle.name)
                self._attach(member, handle)
                self.members[member.name] = member
                log_event(logging.INFO, "adopted", handle.name, address=handle.address)
            for name in self._generate_names(max(0, count - len(self.members))):
                self.members[name] = self._new_member(name)
            await asyncio.gather(*(self.bring_up(m) for m in list(self.members.values())))

    async def bring_up(self, member: Member) -> None:
        """Start (or adopt the handle of) `member` and put it on the ring; on failure schedule a retry."""
        member.busy = True
        member.state = State.STARTING
        try:
            if member.handle is not None and not self.orchestrator.exited(member.handle):
                await self._wait_healthy(member)  # adopted: it may already be serving
            else:
                await self._start(member)
        except LoadBalancerError as exc:  # failed start, or e.g. a foreign container holds the name
            await self._stop(member)
            member.state = State.DOWN
            member.attempts += 1
            delay = min(
                self.limits.restart_backoff_max,
                self.limits.restart_backoff_base * 2 ** (member.attempts - 1),
            )
            member.next_start = time.monotonic() + delay
            member.last_error = exc.message
            log_event(logging.ERROR, "start_failed", member.name, reason=exc.message, retry_in=delay)
            return
        finally:
            member.busy = False
        if self.members.get(member.name) is not member:
            await self._stop(member)  # removed by /rm while it was starting
            return
        member.attempts = 0
        member.fails = 0
        member.state = State.UP
        self.rebuild()
        log_event(logging.INFO, "up", member.name, address=_address(member))

    async def replace(self, member: Member, reason: str) -> None:
        """Stop a dead member and start it again (same name by default, or a new generated name)."""
        member.busy = True
        member.restarts += 1
        member.last_error = reason
        log_event(logging.WARNING, "replacing", member.name, reason=reason, restarts=member.restarts)
        await self._stop(member)
        member.busy = False
        if self.members.get(member.name) is not member:
            return
        if self.limits.replacement_gets_new_name:
            async with self._lock:
                if self.members.get(member.name) is not member:
                    return
                del self.members[member.name]
                (new_name,) = self._generate_names(1, taken=[member.name])
                fresh = self._new_member(new_name)
                fresh.restarts = member.restarts
                self.members[new_name] = fresh
                log_event(
                    logging.WARNING,
                    "removed",
                    member.name,
                    reason="replaced under a new name",
                    successor=new_name,
                )
                member = fresh
        await self.bring_up(member)

    async def close(self) -> None:
        """LB shutdown: drop connections, then let the orchestrator stop (or keep) what it started."""
        async with self._lock:
            members = list(self.members.values())
            self.members.clear()
            self.rebuild()
            for member in members:
                for pool in (member.upstream, member.probe):
                    if pool is not None:
                        await pool.close()
            await self.orchestrator.close()

    # ----- internals ---------------------------------------------------------------------------
    def _new_member(self, name: str) -> Member:
        self._seq += 1
        return Member(name=name, seq=self._seq)

    def _names_to_add(self, n: int, hostnames: Sequence[str]) -> list[str]:
        if len(set(hostnames)) != len(hostnames):
            raise InvalidRequestError(f"Duplicate names in hostname list: {list(hostnames)}")
        for name in hostnames:
            self.orchestrator.check_name(name)
            if name in self.members:
                raise ReplicaExistsError(f"Replica name '{name}' is already in use")
        if len(self.members) + n > self.limits.max_replicas:
            raise InvalidRequestError(
                f"Cannot add {n} replicas: at most {self.limits.max_replicas} are allowed "
                f"({len(self.members)} now)"
            )
        names = [*hostnames, *self._generate_names(n - len(hostnames), taken=hostnames)]
        try:
            self.strategy.build([*self.members, *names])  # e.g. slot rings hold at most 56 replicas
        except ValueError as exc:
            raise InvalidRequestError(
                f"Cannot add {n} replicas with strategy {self.strategy.name}: {exc}"
            ) from exc
        return names

    def _names_to_remove(self, n: int, hostnames: Sequence[str]) -> list[str]:
        if len(set(hostnames)) != len(hostnames):
            raise InvalidRequestError(f"Duplicate names in hostname list: {list(hostnames)}")
        unknown = [name for name in hostnames if name not in self.members]
        if unknown:
            raise UnknownReplicaError(
                f"Replica name '{unknown[0]}' is not a member; members are {self.names()}"
            )
        others = sorted(
            (m for m in self.members.values() if m.name not in hostnames), key=lambda m: m.seq, reverse=True
        )
        extra = [m.name for m in others[: max(0, n - len(hostnames))]]
        return [*hostnames, *extra]

    def _generate_names(self, count: int, taken: Iterable[str] = ()) -> list[str]:
        """The smallest free `<prefix><k>`, so names are reused after removal (server1..serverN)."""
        used = set(self.members) | set(taken)
        names: list[str] = []
        k = 1
        while len(names) < count:
            candidate = f"{self.orchestrator.name_prefix}{k}"
            if candidate not in used:
                names.append(candidate)
                used.add(candidate)
            k += 1
        return names

    def _attach(self, member: Member, handle: ReplicaHandle) -> None:
        lim = self.limits
        member.handle = handle
        member.upstream = UpstreamPool(
            handle.host,
            handle.port,
            connect_timeout=lim.connect_timeout,
            read_timeout=lim.read_timeout,
            max_idle=lim.max_idle,
        )
        probe_timeout = lim.heartbeat_timeout
        member.probe = UpstreamPool(
            handle.host, handle.port, connect_timeout=probe_timeout, read_timeout=probe_timeout, max_idle=1
        )

    async def _start(self, member: Member) -> None:
        """Ask the orchestrator for the replica, then wait until /heartbeat answers."""
        log_event(logging.INFO, "spawning", member.name, backend=self.orchestrator.kind)
        self._attach(member, await self.orchestrator.start(member.name))
        await self._wait_healthy(member)

    async def _wait_healthy(self, member: Member) -> None:
        assert member.handle is not None
        deadline = time.monotonic() + self.limits.start_timeout
        while True:
            if await self.probe(member):
                return
            if self.orchestrator.exited(member.handle):
                raise ReplicaStartError(f"replica '{member.name}' exited during start-up")
            if time.monotonic() > deadline:
                raise ReplicaStartError(
                    f"replica '{member.name}' did not answer /heartbeat within {self.limits.start_timeout:g}s"
                )
            await asyncio.sleep(_START_POLL_SECONDS)

    async def probe(self, member: Member) -> bool:
        """One GET /heartbeat; True on 200. Records the probe time."""
        probe, handle = member.probe, member.handle
        if probe is None or handle is None:
            return False
        member.last_probe = time.time()
        try:
            response = await probe.request(b"GET", _HEARTBEAT_TARGET, [(b"host", handle.address.encode())])
        except UpstreamError:
            return False
        return response.status == 200

    async def _stop(self, member: Member) -> None:
        handle, upstream, probe = member.handle, member.upstream, member.probe
        member.handle = member.upstream = member.probe = None
        for pool in (upstream, probe):
            if pool is not None:
                await pool.close()
        if handle is not None:
            try:
                await self.orchestrator.stop(handle)
            except Exception:  # a failed stop must not wedge membership changes
                logger.exception("replica %s: stop failed", member.name)
