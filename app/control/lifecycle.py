"""One owner for each replica's life: a state machine whose named transitions are the only code that
changes a member.

Everyone else reports and the owner decides (HAProxy's server states, a Kubernetes controller's one
reconcile per object): the health monitor reports probe results, the runtime reports an exit, the proxy
reports a refused connection, and the membership asks for a start or a removal. A start, a back-off or a
replacement in flight is one task the owner holds and cancels on removal or shutdown.

    starting --healthy--> up --fall / refused--> down --rise--> up
       |                   |                      |
       | failed            +------exited----------+--fall / exited--> replacing --> starting
       v
    backoff --delay--> starting            any --remove--> draining --> removed

Where an engine restarts dead instances itself (Swarm), `replaces_dead` is off: a member the engine
runs is watched (down, probed, `rise` good heartbeats put it up), and fall or an exit only take it
down; the LB never stops or starts a copy of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic

from app.control.lifecycle_log import log_event
from app.errors import LoadBalancerError, ReplicaStartError
from app.runtimes.base import HandleT, Runtime
from app.settings import Settings
from app.upstream.pool import UpstreamPool

logger = logging.getLogger(__name__)


class State(StrEnum):
    """Where a member is in its life; only UP members are on the ring."""

    STARTING = "starting"  # asked the runtime for an instance; waiting for its first good heartbeat
    UP = "up"  # on the ring
    DOWN = "down"  # off the ring but still probed: `rise` good heartbeats bring it back
    REPLACING = "replacing"  # the dead instance is being stopped; a new one starts next
    BACKOFF = "backoff"  # a start failed; the next one waits out a capped exponential delay
    DRAINING = "draining"  # removed: off the ring while its requests in flight finish
    REMOVED = "removed"  # stopped for good; the member object is forgotten


#: States in which the health monitor probes a member.
PROBED = frozenset({State.UP, State.DOWN})


@dataclass(frozen=True)
class LifecyclePolicy:
    """Timeouts, HAProxy-style rise/fall and back-off: every knob comes from Settings."""

    rise: int
    fall: int
    connect_timeout: float
    read_timeout: float
    max_idle: int
    heartbeat_timeout: float
    start_timeout: float
    restart_backoff_max: float
    drain_timeout: float
    restart_backoff_base: float = 0.5
    replaces_dead: bool = True  # False where the engine restarts dead instances (Swarm)
    start_poll: float = 0.02  # seconds between heartbeats while a new instance boots

    @classmethod
    def from_settings(cls, settings: Settings) -> LifecyclePolicy:
        """The lifecycle's view of the settings."""
        return cls(
            rise=settings.rise,
            fall=settings.fall,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_idle=settings.max_idle_connections,
            heartbeat_timeout=settings.heartbeat_timeout,
            start_timeout=settings.start_timeout,
            restart_backoff_max=settings.restart_backoff_max,
            drain_timeout=settings.drain_timeout,
        )

    def backoff(self, attempts: int) -> float:
        """Delay before the next start after `attempts` failed ones in a row (0.5 s, 1 s, 2 s, ... capped)."""
        # The exponent is capped: 2.0 ** 1024 overflows, after ~1,000 failed starts in a row (hours).
        return min(self.restart_backoff_max, self.restart_backoff_base * 2.0 ** min(attempts - 1, 60))


Prober = Callable[["Replica[Any]"], Awaitable[bool]]


# Waits until no other process of the LB (LB_WORKERS) has requests in flight to the named replica, or
# until the monotonic deadline; returns how many processes still have some.
DrainWaiter = Callable[[str, float], Awaitable[int]]


class Hooks:
    """What a member tells the membership that owns it; the membership fills these in."""

    # Set when other processes proxy too: a removed member waits for their requests as well.
    drain_waiter: DrainWaiter | None = None

    def routing_changed(self, member: Replica[Any]) -> None:
        """`member` entered or left UP: the routing table must be rebuilt."""

    def state_changed(self, member: Replica[Any], state: State) -> None:
        """`member` entered `state` (for metrics)."""

    def wake_monitor(self) -> None:
        """Probe soon: a member was reported down by someone other than the monitor."""

    def successor_name(self, member: Replica[Any]) -> str | None:
        """Under LB_REPLACEMENT_NAME=new: retire `member` and start a successor, returning its name.

        None (the default) means the member is started again under its own name."""
        return None


class Replica(Generic[HandleT]):
    """One desired replica: its instance on the runtime, its connection pools and its health."""

    def __init__(
        self,
        name: str,
        seq: int,
        runtime: Runtime[HandleT],
        policy: LifecyclePolicy,
        prober: Prober,
        hooks: Hooks,
        restarts: int = 0,
    ) -> None:
        self.name = name
        self.seq = seq  # order of addition: /rm without names removes the newest first
        self.state = State.STARTING
        self.handle: HandleT | None = None
        self.upstream: UpstreamPool | None = None
        self.probe: UpstreamPool | None = None
        self.fails = 0  # failed heartbeats in a row
        self.oks = 0  # good heartbeats in a row
        self.last_probe: float | None = None  # wall-clock time of the last heartbeat probe
        self.restarts = restarts  # a successor under a new name carries its predecessor's count
        self.attempts = 0  # failed starts in a row, drives the back-off
        self.next_start = 0.0  # monotonic time of the next start while backing off
        self._last_error: str | None = None
        self.last_error_at: float | None = None  # wall-clock time last_error was set (its setter's)
        self._runtime = runtime
        self._policy = policy
        self._prober = prober
        self._hooks = hooks
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, {self.state.value})"

    @property
    def last_error(self) -> str | None:
        """Why it last left UP or failed to start; None once heartbeats alone brought it back."""
        return self._last_error

    @last_error.setter
    def last_error(self, reason: str | None) -> None:
        # One place stamps the time, so every transition that records an error records when.
        self._last_error = reason
        self.last_error_at = None if reason is None else time.time()

    # ----- the one place that changes state ------------------------------------------------------
    def _enter(self, state: State, event: str, level: int = logging.INFO, **fields: object) -> None:
        """Move to `state` and log the transition as one lifecycle event."""
        was_up = self.state is State.UP
        self.state = state
        log_event(level, event, self.name, **fields)
        self._hooks.state_changed(self, state)
        if was_up != (state is State.UP):
            self._hooks.routing_changed(self)

    # ----- requests from the membership ----------------------------------------------------------
    async def boot(self, adopted: HandleT | None = None) -> None:
        """First start at LB boot: one try now; a failure backs off and retries in the background."""
        if adopted is not None:
            self._attach(adopted)
            log_event(logging.INFO, "adopted", self.name, address=adopted.address)
        try:
            await self.start_once()
        except LoadBalancerError as exc:
            self._hold(self._retry_after(exc))

    def launch(self) -> None:
        """Start in the background, retrying failed starts with back-off (e.g. a successor)."""
        self._hold(self._start_until_up())

    def watch(self, handle: HandleT) -> None:
        """Follow an instance the engine runs and restarts (replaces_dead off): probed from now on,
        on the ring after `rise` good heartbeats."""
        self._attach(handle)
        self.oks = 0
        self._enter(State.DOWN, "watching", address=handle.address)
        self._hooks.wake_monitor()

    async def start_once(self) -> None:
        """Start and wait until it serves, or raise (for /add: all or nothing, no retries)."""
        task = self._hold(self._start_and_wait())
        await task
        self._mark_up()

    def remove(self, reason: str, drain: bool = True) -> asyncio.Future[None]:
        """Take the member off the ring now; the returned future lets requests in flight finish (up to
        the drain timeout; in every process of the LB), then stops the instance. Whatever was in flight
        for it is cancelled."""
        if self.state is State.REMOVED:
            return asyncio.ensure_future(asyncio.sleep(0))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        upstream = self.upstream
        elsewhere = self._hooks.drain_waiter  # other processes' requests: known only once they answer
        if drain and self.state is State.UP and upstream is not None and (upstream.in_flight or elsewhere):
            self._enter(State.DRAINING, "draining", reason=reason, in_flight=upstream.in_flight)
            return asyncio.ensure_future(self._finish_removal(task, reason, upstream))
        self._enter(State.REMOVED, "removed", reason=reason)
        return asyncio.ensure_future(self._finish_removal(task, reason, None))

    async def _finish_removal(
        self, task: asyncio.Task[None] | None, reason: str, draining: UpstreamPool | None
    ) -> None:
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if draining is not None:
            await self._wait_drained(draining)
            self._enter(State.REMOVED, "removed", reason=reason)
        await self._stop_instance()

    async def shutdown(self) -> None:
        """LB shutdown: cancel what is in flight and drop connections; the runtime's close() decides
        what happens to the instances (processes die, adopted containers may be kept)."""
        await self._cancel_task()
        self.state = State.REMOVED
        await self._close_pools()

    # ----- reports ----------------------------------------------------------------------------------
    def probe_due(self) -> HandleT | None:
        """The instance to probe now, or None when the member is not probed in its state."""
        return self.handle if self.state in PROBED and not self.busy else None

    def report_probe(self, handle: HandleT, ok: bool) -> None:
        """The health monitor's verdict on `handle`; stale verdicts (an older instance) are ignored."""
        if handle is not self.handle or self.state not in PROBED or self.busy:
            return
        self.last_probe = time.time()
        if ok:
            self.fails = 0
            self.oks += 1
            if self.state is State.DOWN and self.oks >= self._policy.rise:
                self.last_error = None
                self._enter(State.UP, "up", reason=f"{self.oks} good heartbeats")
            return
        self.oks = 0
        self.fails += 1
        if not self._policy.replaces_dead:
            if self.state is State.UP and self.fails >= self._policy.fall:
                self._take_down(f"{self.fails} failed heartbeats", detected_by="heartbeat")
            return
        if self._runtime.exited(handle):
            self._replace(handle, "process exited", "replica exited", detected_by="heartbeat")
        elif self.fails >= self._policy.fall:
            reason = f"{self.fails} failed heartbeats"
            self._replace(handle, reason, reason, detected_by="heartbeat")

    def report_refused(self, reason: str) -> None:
        """The proxy could not connect: off the ring now; the monitor probes at once and decides."""
        if self.state is State.UP:
            self._take_down(reason, detected_by="proxy")

    def _take_down(self, reason: str, detected_by: str) -> None:
        self.oks = 0
        self.last_error = reason
        self._enter(State.DOWN, "down", logging.WARNING, reason=reason, detected_by=detected_by)
        self._hooks.wake_monitor()

    def report_exit(self, handle: HandleT) -> None:
        """The runtime saw the instance die: replace it without waiting for a heartbeat."""
        if handle is not self.handle:
            return  # an older instance, already replaced
        if not self._policy.replaces_dead:  # the engine restarts it: off the ring until it rises
            if self.state is State.UP:
                self._take_down("task exited", detected_by="runtime")
            return
        if self.state in PROBED and not self.busy:
            self._replace(handle, "process exited", "replica exited", detected_by="runtime")
        # STARTING: the start-up wait sees runtime.exited() and fails fast. Others: already handled.

    # ----- transitions with a task ------------------------------------------------------------------
    def _replace(self, handle: HandleT, down_reason: str, reason: str, detected_by: str) -> None:
        if self.state is State.UP:
            self._enter(State.DOWN, "down", logging.WARNING, reason=down_reason, detected_by=detected_by)
        self.restarts += 1
        self.last_error = reason
        self._enter(State.REPLACING, "replacing", logging.WARNING, reason=reason, restarts=self.restarts)
        self._hold(self._replace_instance())

    async def _replace_instance(self) -> None:
        await self._stop_instance()
        successor = self._hooks.successor_name(self)
        if successor is not None:
            self._enter(
                State.REMOVED,
                "removed",
                logging.WARNING,
                reason="replaced under a new name",
                successor=successor,
            )
            return
        await self._start_until_up()

    async def _start_until_up(self) -> None:
        """Start until the instance serves; failed starts back off (capped), forever until removed."""
        while True:
            try:
                await self._start_and_wait()
            except LoadBalancerError as exc:  # failed start, or e.g. a foreign container holds the name
                await self._back_off(exc)
                continue
            self._mark_up()
            return

    async def _retry_after(self, exc: LoadBalancerError) -> None:
        await self._back_off(exc)
        await self._start_until_up()

    async def _back_off(self, exc: LoadBalancerError) -> None:
        await self._stop_instance()
        self.attempts += 1
        delay = self._policy.backoff(self.attempts)
        self.next_start = time.monotonic() + delay
        self.last_error = exc.message
        self._enter(State.BACKOFF, "start_failed", logging.ERROR, reason=exc.message, retry_in=delay)
        await asyncio.sleep(delay)

    async def _start_and_wait(self) -> None:
        if self.handle is None or self._runtime.exited(self.handle):
            await self._stop_instance()
            self._enter(State.STARTING, "spawning", runtime=self._runtime.kind)
            self._attach(await self._start_instance())
        else:
            self.state = State.STARTING  # adopted: it may be serving already; logged as "adopted"
        await self._wait_healthy()

    async def _start_instance(self) -> HandleT:
        """runtime.start(), shielded: if we are cancelled meanwhile, what it started is stopped."""
        start = asyncio.ensure_future(self._runtime.start(self.name))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # a start that failed left nothing to stop
                await self._runtime.stop(await start)
            raise

    async def _wait_healthy(self) -> None:
        handle = self.handle
        assert handle is not None
        deadline = time.monotonic() + self._policy.start_timeout
        while not await self._prober(self):
            if self._runtime.exited(handle):
                raise ReplicaStartError(f"replica '{self.name}' exited during start-up")
            if time.monotonic() > deadline:
                raise ReplicaStartError(
                    f"replica '{self.name}' did not answer /heartbeat within {self._policy.start_timeout:g}s"
                )
            await asyncio.sleep(self._policy.start_poll)

    def _mark_up(self) -> None:
        self.attempts = 0
        self.fails = 0
        self.oks = 0
        self.next_start = 0.0
        address = self.handle.address if self.handle else None
        self._enter(State.UP, "up", address=address)

    async def _wait_drained(self, upstream: UpstreamPool) -> None:
        deadline = time.monotonic() + self._policy.drain_timeout
        while upstream.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(self._policy.start_poll)
        if upstream.in_flight:
            logger.warning(
                "replica %s: %d requests still in flight after the drain timeout",
                self.name,
                upstream.in_flight,
            )
        waiter = self._hooks.drain_waiter
        if waiter is not None and (busy := await waiter(self.name, deadline)):
            logger.warning(
                "replica %s: %d worker processes still had requests in flight after the drain timeout",
                self.name,
                busy,
            )

    # ----- the held task ----------------------------------------------------------------------------
    def _hold(self, job: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(job)
        self._task = task
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if (
            not task.cancelled()
            and (exc := task.exception()) is not None
            and not isinstance(exc, LoadBalancerError)
        ):
            logger.error("replica %s: lifecycle task failed", self.name, exc_info=exc)

    async def _cancel_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @property
    def busy(self) -> bool:
        """A start, back-off or replacement is in flight (its task is held and not finished)."""
        return self._task is not None and not self._task.done()

    # ----- instance and connections -----------------------------------------------------------------
    def retune(self, policy: LifecyclePolicy) -> None:
        """Timeouts, rise/fall and back-off from now on (a reload): state, counters and connections stay."""
        self._policy = policy
        if self.upstream is not None:
            self.upstream.retune(policy.connect_timeout, policy.read_timeout, policy.max_idle)
        if self.probe is not None:
            self.probe.retune(policy.heartbeat_timeout, policy.heartbeat_timeout, 1)

    def _attach(self, handle: HandleT) -> None:
        p = self._policy
        self.handle = handle
        self.upstream = UpstreamPool(
            handle.host,
            handle.port,
            connect_timeout=p.connect_timeout,
            read_timeout=p.read_timeout,
            max_idle=p.max_idle,
        )
        self.probe = UpstreamPool(
            handle.host,
            handle.port,
            connect_timeout=p.heartbeat_timeout,
            read_timeout=p.heartbeat_timeout,
            max_idle=1,
        )

    async def _close_pools(self) -> None:
        upstream, probe = self.upstream, self.probe
        self.upstream = self.probe = None
        for pool in (upstream, probe):
            if pool is not None:
                await pool.close()

    async def _stop_instance(self) -> None:
        handle, self.handle = self.handle, None
        await self._close_pools()
        if handle is not None:
            try:
                await self._runtime.stop(handle)
            except Exception:  # a failed stop must not wedge the member's life
                logger.exception("replica %s: stop failed", self.name)
