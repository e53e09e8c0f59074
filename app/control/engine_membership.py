"""Membership held by an engine (Swarm): every LB instance lists the engine's replicas and follows its
events, so instances that build their rings from the same listing route every key the same way.

No membership state of our own beyond a cache of the engine's: /add creates replicas in the engine,
/rm removes them there, and any change made through another instance arrives as an engine event that
triggers a fresh listing (a reconcile, as a Kubernetes controller does; a periodic one catches what an
event stream could miss). The lifecycle owners never replace a dead replica: the engine restarts it
under the same name, and the member is off the ring until its heartbeats rise again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from app.control.health import probe_heartbeat
from app.control.lifecycle import Prober, Replica
from app.control.local_membership import LocalMembership, MembershipPolicy
from app.control.naming import generate_names
from app.errors import LoadBalancerError, PeerCreatedError
from app.ring.base import HashStrategy
from app.runtimes.base import ReplicaHandle
from app.runtimes.engine import EngineRuntime, TaskView

logger = logging.getLogger(__name__)


class EngineMembership(LocalMembership):
    """LocalMembership's members, lifecycle and routing, with the desired set read from the engine."""

    def __init__(
        self,
        runtime: EngineRuntime[Any],
        strategy: HashStrategy,
        policy: MembershipPolicy,
        prober: Prober = probe_heartbeat,
        resync_interval: float = 5.0,
    ) -> None:
        lifecycle = replace(policy.lifecycle, replaces_dead=False)
        super().__init__(runtime, strategy, replace(policy, lifecycle=lifecycle), prober)
        self.engine = runtime
        self.tasks: dict[str, TaskView | None] = {}  # the engine's view of each replica's task
        self._resync_interval = resync_interval
        self._changed = asyncio.Event()
        self._stopping = False
        self._follower: asyncio.Task[None] | None = None
        runtime.on_change = self._changed.set

    async def start(self, initial: int) -> None:
        """Take the engine's replicas of this cluster; a cluster with none gets `initial` new ones."""
        async with self._lock:
            await self.engine.watch()  # subscribe first: no change falls between it and the listing
            listing = await self.engine.list_replicas()
            if not listing and initial:
                # Two instances starting together both create server1..N: names are unique in the
                # engine, so the slower one's creates conflict, and it takes the other's from the listing.
                names = generate_names(self.runtime.name_prefix, initial, ())
                results = await asyncio.gather(
                    *(self.runtime.start(name) for name in names), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException) and not isinstance(result, PeerCreatedError):
                        raise result
                listing = await self.engine.list_replicas()
            self._apply(listing)
        self.monitor.start()
        self._follower = asyncio.create_task(self._follow(), name="engine-membership")

    def task(self, name: str) -> TaskView | None:
        """The engine's view of `name`'s current task, as of the last listing."""
        return self.tasks.get(name)

    async def resync(self) -> None:
        """List the engine's replicas and make the members match (serialized with /add and /rm)."""
        async with self._lock:
            self._apply(await self.engine.list_replicas())

    async def close(self) -> None:
        """Stop following the engine, then close like LocalMembership (the engine keeps the replicas)."""
        self._stopping = True
        self._changed.set()
        if self._follower is not None:
            await self._follower
        await super().close()

    # ----- reconcile -------------------------------------------------------------------------------
    async def _follow(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=self._resync_interval)
            self._changed.clear()
            if self._stopping:
                return
            try:
                await self.resync()
            except LoadBalancerError as exc:
                logger.warning("engine listing failed (%s); the next event or period retries", exc.message)
            except Exception:
                logger.exception("engine resync failed; the next event or period retries")

    def _apply(self, listing: dict[str, tuple[Any, TaskView | None]]) -> None:
        """Make the members match the listing: gone or re-created services leave, new ones are watched."""
        self.tasks = {name: task for name, (_, task) in listing.items()}
        changed = False
        for name, member in list(self.members.items()):
            live = listing.get(name)
            if live is None or live[0] is not member.handle:
                del self.members[name]
                self._hold_leaving(member, member.remove("removed from the engine"))
                changed = True
        for name, (handle, _) in listing.items():
            if name not in self.members and name not in self._adding:
                self._watch(handle)
                changed = True
        if changed:
            self._rebuild()
            logger.info("members now %s (from the engine)", self.names())
        self.monitor.wake()  # e.g. a task restarted: probe now rather than at the next round

    def _watch(self, handle: ReplicaHandle) -> None:
        member = self._new_member(handle.name)
        self.members[handle.name] = member
        member.watch(handle)

    async def _retire(self, members: Sequence[Replica[Any]]) -> None:
        """/rm: remove the services in the engine now, so every instance sees it at once; requests in
        flight finish as the replica stops gracefully (the engine's stop grace period)."""
        handles = [m.handle for m in members if m.handle is not None]
        results = await asyncio.gather(*(self.runtime.stop(h) for h in handles), return_exceptions=True)
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, Exception):
                logger.warning(
                    "replica %s: removing its service failed (%r); retried on stop", handle.name, result
                )
