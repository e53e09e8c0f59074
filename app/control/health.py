"""The health monitor: probes every replica, flips UP/DOWN with rise/fall, and reconciles toward the
desired membership (replaces dead replicas, retries failed starts with capped exponential back-off).

Runs as one lifespan task. A round never raises out of the loop: an error is logged and the next
round runs. Transitions, not probes, are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from app.control.events import log_event
from app.control.pool import Member, ReplicaPool, State

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthPolicy:
    """HAProxy-style check parameters: `fall` misses mark a replica down, `rise` successes bring it back."""

    interval: float = 0.25
    jitter: float = 0.1
    rise: int = 2
    fall: int = 2


class HealthMonitor:
    """Owns the probe loop and the replacement tasks it spawns."""

    def __init__(self, pool: ReplicaPool, policy: HealthPolicy) -> None:
        self.pool = pool
        self.policy = policy
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop as a background task."""
        self._loop_task = asyncio.create_task(self._run(), name="heartbeat")

    async def stop(self) -> None:
        """Stop probing and cancel replacements in flight; returns when all are done."""
        self._stopping = True
        self.pool.changed.set()
        if self._loop_task is not None:
            await self._loop_task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.check_once()
            except Exception:
                logger.exception("heartbeat round failed; next round continues")
            await self._pause()

    async def _pause(self) -> None:
        """Sleep one interval (with jitter), cut short by a passive failure report or by stop()."""
        p = self.policy
        delay = p.interval * (1 + random.uniform(-p.jitter, p.jitter))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pool.changed.wait(), timeout=delay)
        self.pool.changed.clear()

    async def check_once(self) -> None:
        """One round: start what is missing, probe the rest, apply transitions."""
        pool = self.pool
        now = time.monotonic()
        probed: list[Member] = []
        for member in list(pool.members.values()):
            if member.busy:
                continue
            if member.handle is None:
                if now >= member.next_start:
                    self._spawn(pool.bring_up(member))
            elif pool.orchestrator.exited(member.handle):
                self._mark_down(member, "process exited")
                self._spawn(pool.replace(member, "replica exited"))
            else:
                probed.append(member)
        results = await asyncio.gather(*(pool.probe(m) for m in probed))
        for member, ok in zip(probed, results, strict=True):
            if member.busy or pool.members.get(member.name) is not member:
                continue  # removed or taken over while the probe ran
            self._apply(member, ok)

    def _apply(self, member: Member, ok: bool) -> None:
        p = self.policy
        if ok:
            member.fails = 0
            member.oks += 1
            if member.state is State.DOWN and member.oks >= p.rise:
                member.state = State.UP
                member.last_error = None
                self.pool.rebuild()
                log_event(logging.INFO, "up", member.name, reason=f"{member.oks} good heartbeats")
            return
        member.oks = 0
        member.fails += 1
        if member.fails < p.fall:
            return
        reason = f"{member.fails} failed heartbeats"
        self._mark_down(member, reason)
        self._spawn(self.pool.replace(member, reason))

    def _mark_down(self, member: Member, reason: str) -> None:
        if member.state is State.UP:
            member.state = State.DOWN
            self.pool.rebuild()
            log_event(logging.WARNING, "down", member.name, reason=reason, detected_by="heartbeat")
        member.busy = True  # the replacement task owns it from here

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
