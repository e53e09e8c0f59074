"""Health checking: the heartbeat probe and the monitor that runs it over every member.

The monitor only probes and reports; each member's lifecycle owner decides what a result means
(rise/fall, replacement). Runs as one lifespan task; a round never raises out of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from app.control.lifecycle import Prober, Replica
from app.settings import Settings
from app.upstream.errors import UpstreamError

logger = logging.getLogger(__name__)

_HEARTBEAT_TARGET = b"/heartbeat"


async def probe_heartbeat(member: Replica[Any]) -> bool:
    """One GET /heartbeat on the member's probe connection; True on 200."""
    probe, handle = member.probe, member.handle
    if probe is None or handle is None:
        return False
    try:
        response = await probe.request(b"GET", _HEARTBEAT_TARGET, [(b"host", handle.address.encode())])
    except UpstreamError:
        return False
    return response.status == 200


@dataclass(frozen=True)
class ProbeSchedule:
    """How often the monitor probes: a period with ± jitter, so probes of many LBs do not align."""

    interval: float
    jitter: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ProbeSchedule:
        """The monitor's view of the settings."""
        return cls(interval=settings.heartbeat_interval, jitter=settings.heartbeat_jitter)

    def next_delay(self) -> float:
        """Seconds until the next round."""
        return self.interval * (1 + random.uniform(-self.jitter, self.jitter))


class HealthMonitor:
    """Probes every member that is due, each round, and hands the verdicts to their owners."""

    def __init__(
        self,
        members: Callable[[], Iterable[Replica[Any]]],
        schedule: ProbeSchedule,
        prober: Prober = probe_heartbeat,
    ) -> None:
        self._members = members
        self._schedule = schedule
        self._prober = prober
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop as a background task."""
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    def retune(self, schedule: ProbeSchedule) -> None:
        """Probe on the new schedule from the next round (a reload)."""
        self._schedule = schedule

    def wake(self) -> None:
        """Run the next round now (a member was reported down by someone else)."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop probing; returns when the loop has ended."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def check_once(self) -> None:
        """One round: probe every member that is due and report each result to its owner."""
        due = [(m, handle) for m in list(self._members()) if (handle := m.probe_due()) is not None]
        results = await asyncio.gather(*(self._prober(m) for m, _ in due))
        for (member, handle), ok in zip(due, results, strict=True):
            member.report_probe(handle, ok)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.check_once()
            except Exception:
                logger.exception("heartbeat round failed; next round continues")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._schedule.next_delay())
            self._wake.clear()
