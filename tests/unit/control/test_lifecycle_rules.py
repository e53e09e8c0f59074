"""The lifecycle's thresholds and timings, each asserted at its boundary on one member.

No health monitor runs here: the test is the monitor and reports every verdict itself, so a rule is
checked one heartbeat at a time (`rise` puts a member up on exactly the rise-th good heartbeat, not
one before). Each of these was seen to fail with its rule broken in app/control/lifecycle.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import pytest

from app.control import lifecycle
from app.control.lifecycle import Hooks, LifecyclePolicy, Replica, State
from app.errors import ReplicaStartError
from app.settings import Settings
from tests.fake_runtime import FakeHandle, FakeRuntime, GatedProber, make_policy
from tests.polling import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]  # the one async runner, bounded


class RecordingHooks(Hooks):
    """Records each state the member enters (with the monotonic time, its next start and its last
    error, as /status would show them) and counts the times it entered or left the ring."""

    def __init__(self) -> None:
        self.routing_changes = 0
        self.entered: list[tuple[State, float, float, str | None]] = []

    def routing_changed(self, member: Replica[Any]) -> None:
        self.routing_changes += 1

    def state_changed(self, member: Replica[Any], state: State) -> None:
        self.entered.append((state, time.monotonic(), member.next_start, member.last_error))


def replica(runtime: FakeRuntime, hooks: Hooks | None = None, **policy: Any) -> Replica[FakeHandle]:
    return Replica("r1", 1, runtime, make_policy(**policy), GatedProber(), hooks or Hooks())


async def up_member(
    runtime: FakeRuntime | None = None, hooks: Hooks | None = None, **policy: Any
) -> tuple[Replica[FakeHandle], FakeHandle]:
    """A member started and on the ring, with the handle of its instance."""
    member = replica(runtime or FakeRuntime(), hooks, **policy)
    await member.start_once()
    assert state(member) is State.UP and member.handle is not None
    return member, member.handle


def state(member: Replica[FakeHandle]) -> State:
    """The member's state, read afresh (each report may change it)."""
    return member.state


def report(member: Replica[FakeHandle], handle: FakeHandle, verdicts: Iterable[bool]) -> None:
    for ok in verdicts:
        member.report_probe(handle, ok)


# ----- rise -------------------------------------------------------------------------------------------
async def test_a_down_member_rises_on_exactly_the_rise_th_good_heartbeat() -> None:
    hooks = RecordingHooks()
    member, handle = await up_member(hooks=hooks, rise=3)
    report(member, handle, [True] * 5)  # good heartbeats while up are no credit for a later rise
    member.report_refused("connection refused")
    assert state(member) is State.DOWN and member.oks == 0
    report(member, handle, [True, True])
    assert state(member) is State.DOWN  # rise - 1 is not enough
    report(member, handle, [True])
    assert state(member) is State.UP
    assert hooks.routing_changes == 3  # up, down, up: each one rebuilt the ring
    await member.shutdown()


async def test_a_failed_heartbeat_starts_the_rise_count_again() -> None:
    member, handle = await up_member(rise=3, fall=3)
    member.report_refused("connection refused")
    report(member, handle, [True, True, False, True, True])
    assert state(member) is State.DOWN  # 2 + 2 good ones, but never 3 in a row
    assert (member.oks, member.fails) == (2, 0)
    report(member, handle, [True])
    assert state(member) is State.UP and member.last_error is None
    await member.shutdown()


async def test_a_watched_member_needs_rise_good_heartbeats_before_the_ring() -> None:
    runtime = FakeRuntime()
    member = replica(runtime, replaces_dead=False, rise=2)
    handle = await runtime.start("r1")
    member.oks = 5  # whatever came before the watch counts for nothing
    member.watch(handle)
    assert state(member) is State.DOWN and member.probe_due() is handle
    report(member, handle, [True])
    assert state(member) is State.DOWN
    report(member, handle, [True])
    assert state(member) is State.UP
    await member.shutdown()


# ----- fall -------------------------------------------------------------------------------------------
async def test_an_up_member_is_replaced_on_exactly_the_fall_th_failed_heartbeat() -> None:
    runtime = FakeRuntime()
    member, handle = await up_member(runtime, fall=3)
    report(member, handle, [False, False, True, False, False])  # a good one in between resets the count
    assert state(member) is State.UP and member.fails == 2
    assert runtime.starts == ["r1"]
    report(member, handle, [False])
    assert state(member) is State.REPLACING and member.restarts == 1
    assert member.last_error == "3 failed heartbeats"
    await eventually(lambda: member.state is State.UP)
    assert runtime.starts == ["r1", "r1"] and not handle.alive
    second = member.handle
    assert second is not None
    report(member, second, [False] * 3)
    await eventually(lambda: member.state is State.UP and runtime.starts == ["r1"] * 3)
    assert member.restarts == 2  # /status counts every replacement
    await member.shutdown()


async def test_an_engine_run_member_goes_down_on_exactly_the_fall_th_failed_heartbeat() -> None:
    runtime = FakeRuntime()
    member = replica(runtime, replaces_dead=False, rise=1, fall=3)
    handle = await runtime.start("r1")
    member.watch(handle)
    report(member, handle, [True])
    assert state(member) is State.UP
    report(member, handle, [False, False])
    assert state(member) is State.UP
    report(member, handle, [False])
    assert state(member) is State.DOWN and member.last_error == "3 failed heartbeats"
    report(member, handle, [False] * 5)  # the engine restarts it: the LB never does
    assert state(member) is State.DOWN and not member.busy
    assert runtime.starts == ["r1"] and handle.alive
    await member.shutdown()


# ----- stale verdicts ---------------------------------------------------------------------------------
async def test_verdicts_on_a_replaced_instance_change_nothing() -> None:
    runtime = FakeRuntime()
    member, old = await up_member(runtime, rise=2, fall=2)
    runtime.kill("r1", report=False)
    member.report_exit(old)
    assert state(member) is State.REPLACING
    await eventually(lambda: member.state is State.UP)
    new = member.handle
    assert new is not None and new is not old

    report(member, old, [False] * 3)  # late failures of the dead instance
    member.report_exit(old)
    assert state(member) is State.UP and member.fails == 0 and member.handle is new
    assert runtime.starts == ["r1", "r1"]

    member.report_refused("connection refused")
    report(member, old, [True] * 3)  # late successes of the dead instance
    assert state(member) is State.DOWN and member.oks == 0
    report(member, new, [True] * 2)
    assert state(member) is State.UP
    await member.shutdown()


async def test_verdicts_on_a_starting_instance_are_left_to_the_start() -> None:
    prober = GatedProber()
    prober.hold()  # the start-up wait's own heartbeat stays in flight
    member = Replica("r1", 1, FakeRuntime(), make_policy(rise=1, fall=1), prober, Hooks())
    member.launch()
    await eventually(lambda: prober.in_flight == 1)
    handle = member.handle
    assert handle is not None and member.state is State.STARTING
    assert member.probe_due() is None  # the monitor leaves a starting member alone
    report(member, handle, [False, False, True])  # a verdict that slipped in anyway
    assert state(member) is State.STARTING and (member.oks, member.fails, member.restarts) == (0, 0, 0)
    prober.release()
    await eventually(lambda: member.state is State.UP)
    assert member.handle is handle
    await member.shutdown()


async def test_a_probe_that_returns_after_the_removal_changes_nothing() -> None:
    runtime = FakeRuntime()
    member, handle = await up_member(runtime, rise=1, fall=2, drain_timeout=5.0)
    assert member.upstream is not None
    member.upstream.in_flight = 1
    removal = member.remove("/rm")
    assert state(member) is State.DRAINING
    report(member, handle, [False, False, True])  # probes sent before the removal, answered during the drain
    assert state(member) is State.DRAINING and member.restarts == 0 and runtime.starts == ["r1"]
    member.upstream.in_flight = 0
    await removal
    assert state(member) is State.REMOVED and not runtime.running


async def test_an_instance_that_exits_while_draining_is_not_replaced() -> None:
    runtime = FakeRuntime()
    member, handle = await up_member(runtime, drain_timeout=5.0)
    assert member.upstream is not None
    member.upstream.in_flight = 1
    removal = member.remove("/rm")
    assert member.probe_due() is None  # a draining member is not probed either
    runtime.kill("r1", report=False)
    member.report_exit(handle)
    assert state(member) is State.DRAINING and member.restarts == 0 and runtime.starts == ["r1"]
    member.upstream.in_flight = 0
    await removal
    await member.remove("/rm again")  # removing a removed member is a no-op
    assert state(member) is State.REMOVED and runtime.starts == ["r1"] and not runtime.running


async def test_only_an_up_member_drains_on_removal() -> None:
    runtime = FakeRuntime()
    down, _ = await up_member(runtime)
    assert down.upstream is not None
    down.upstream.in_flight = 1
    down.report_refused("connection refused")  # off the ring already: nothing new reaches it
    removal = down.remove("/rm")
    assert state(down) is State.REMOVED
    await removal

    rolled_back, handle = await up_member(runtime)
    assert rolled_back.upstream is not None
    rolled_back.upstream.in_flight = 1
    await rolled_back.remove("/add failed", drain=False)  # the rollback of a failed /add
    assert state(rolled_back) is State.REMOVED and not handle.alive and not runtime.running


# ----- start-up ---------------------------------------------------------------------------------------
async def test_a_start_gives_the_instance_start_timeout_to_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1000.0)
    monkeypatch.setattr(lifecycle, "time", clock)
    probed_at: list[float] = []
    answers = [False] * 3 + [True]

    async def booting(member: Replica[Any]) -> bool:
        """Each heartbeat during the boot takes a quarter of the start timeout."""
        probed_at.append(clock.now)
        clock.now += 0.25
        return answers.pop(0) if answers else False

    runtime = FakeRuntime()
    slow = Replica("r1", 1, runtime, make_policy(start_timeout=1.0), booting, Hooks())
    await slow.start_once()  # its fourth heartbeat, at 0.75 s of 1 s, is a good one
    assert state(slow) is State.UP and probed_at == [1000.0, 1000.25, 1000.5, 1000.75]

    probed_at.clear()
    dead = Replica("r2", 2, runtime, make_policy(start_timeout=1.0), booting, Hooks())
    with pytest.raises(ReplicaStartError, match="did not answer /heartbeat within 1s"):
        await dead.start_once()
    start = probed_at[0]
    # Probed until the timeout had passed: at exactly 1 s it still had a chance.
    assert [t - start for t in probed_at] == [0.0, 0.25, 0.5, 0.75, 1.0]
    await dead.remove("/add failed", drain=False)
    await slow.shutdown()
    assert [h.name for h in runtime.running.values()] == ["r1"]


async def test_an_adopted_instance_is_used_not_restarted() -> None:
    runtime = FakeRuntime()
    running = await runtime.start("r1")  # left by the LB before this one
    member = replica(runtime)
    await member.boot(adopted=running)
    assert state(member) is State.UP and member.handle is running
    assert runtime.starts == ["r1"] and member.upstream is not None

    died = await runtime.start("r2")
    runtime.kill("r2", report=False)  # adopted, but it died before the LB got to it
    other = Replica("r2", 2, runtime, make_policy(), GatedProber(), Hooks())
    await other.boot(adopted=died)
    assert state(other) is State.UP and other.handle is not died
    assert runtime.starts == ["r1", "r2", "r2"]
    await member.shutdown()
    await other.shutdown()


# ----- settings ---------------------------------------------------------------------------------------
def test_the_policy_takes_every_knob_from_the_settings() -> None:
    settings = Settings(
        rise=3,
        fall=4,
        connect_timeout=0.7,
        read_timeout=11.0,
        max_idle_connections=5,
        heartbeat_timeout=0.4,
        start_timeout=21.0,
        restart_backoff_max=31.0,
        drain_timeout=12.0,
    )
    policy = LifecyclePolicy.from_settings(settings)
    assert (policy.rise, policy.fall, policy.max_idle) == (3, 4, 5)
    assert (policy.connect_timeout, policy.read_timeout, policy.heartbeat_timeout) == (0.7, 11.0, 0.4)
    assert (policy.start_timeout, policy.restart_backoff_max, policy.drain_timeout) == (21.0, 31.0, 12.0)


# ----- start back-off ---------------------------------------------------------------------------------
class TimedRuntime(FakeRuntime):
    """Records when each start was asked for (monotonic)."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)
        self.start_times: list[float] = []

    async def start(self, name: str) -> FakeHandle:
        self.start_times.append(time.monotonic())
        return await super().start(name)


async def test_a_failed_start_waits_out_its_back_off_before_the_next_try() -> None:
    delay = 0.1
    runtime, hooks = TimedRuntime(failing_starts={"r1": 1}), RecordingHooks()
    member = replica(runtime, hooks, restart_backoff_base=delay, restart_backoff_max=10.0)
    member.launch()
    await eventually(lambda: member.state is State.UP)
    assert member.restarts == 0 and runtime.starts == ["r1", "r1"]
    ((_, failed_at, announced, why),) = [e for e in hooks.entered if e[0] is State.BACKOFF]
    assert why == "replica 'r1' exited during start-up"  # /status says why it is backing off
    assert failed_at < announced <= failed_at + delay  # the retry time /status shows: ahead, by the delay
    first, second = runtime.start_times
    assert second >= announced  # not one moment before the retry time it announced
    assert second - first >= delay
    assert (member.attempts, member.next_start) == (0, 0.0)  # a start that worked clears the back-off
    await member.shutdown()


# ----- drain deadline ---------------------------------------------------------------------------------
class FakeClock:
    """Stands in for the `time` module inside lifecycle.py: time moves only when the test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.reads = 0

    def monotonic(self) -> float:
        self.reads += 1
        return self.now

    def time(self) -> float:
        return self.now


async def test_the_drain_lasts_until_its_deadline_and_not_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = FakeRuntime()
    member, handle = await up_member(runtime, drain_timeout=5.0)
    clock = FakeClock(1000.0)
    monkeypatch.setattr(lifecycle, "time", clock)

    async def drain_polls(n: int) -> None:
        """Let the drain loop look at the clock `n` more times."""
        reads = clock.reads
        await eventually(lambda: clock.reads >= reads + n)

    assert member.upstream is not None
    member.upstream.in_flight = 1  # never answered
    removal = member.remove("test")
    assert state(member) is State.DRAINING
    await drain_polls(3)
    clock.now = 1000.0 + 4.999
    await drain_polls(3)
    assert state(member) is State.DRAINING and handle.alive and not removal.done()
    clock.now = 1000.0 + 5.0  # exactly the deadline: the drain is over
    await asyncio.wait_for(removal, 2.0)
    assert state(member) is State.REMOVED and not handle.alive
    assert not runtime.running


async def test_other_processes_are_waited_for_up_to_the_same_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, float]] = []

    async def other_workers(name: str, deadline: float) -> int:
        asked.append((name, deadline))
        return 0

    hooks = Hooks()
    hooks.drain_waiter = other_workers
    member, handle = await up_member(hooks=hooks, drain_timeout=5.0)
    monkeypatch.setattr(lifecycle, "time", FakeClock(1000.0))
    await member.remove("test")  # nothing in flight here, but the workers may have some
    assert asked == [("r1", 1005.0)]
    assert state(member) is State.REMOVED and not handle.alive
