"""A member's last error carries when it happened (/status's last_error_at): stamped with every error,
kept while a replacement comes up, cleared with the error when heartbeats alone bring the member back."""

from __future__ import annotations

import time

import pytest

from app.control.lifecycle import Hooks, Replica, State
from tests.fake_runtime import FakeHandle, FakeRuntime, GatedProber, make_policy
from tests.polling import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


def replica(runtime: FakeRuntime, **policy: float) -> Replica[FakeHandle]:
    return Replica("r1", 1, runtime, make_policy(**policy), GatedProber(), Hooks())


def state(member: Replica[FakeHandle]) -> State:
    """The member's state, read afresh (each report may change it)."""
    return member.state


async def test_an_exit_is_stamped_and_the_stamp_outlives_the_replacement() -> None:
    runtime = FakeRuntime()
    member = replica(runtime)
    await member.start_once()
    assert (member.last_error, member.last_error_at) == (None, None)
    old = member.handle
    assert old is not None
    before = time.time()
    runtime.kill("r1", report=False)
    member.report_exit(old)
    after = time.time()
    stamp = member.last_error_at
    assert member.last_error == "replica exited"
    assert stamp is not None and before <= stamp <= after  # wall-clock, like last_probe
    await eventually(lambda: member.state is State.UP and member.handle is not old)
    assert (member.last_error, member.last_error_at) == ("replica exited", stamp)  # up since: kept
    await member.shutdown()


async def test_each_error_restamps_and_a_rise_clears_the_stamp() -> None:
    runtime = FakeRuntime()
    member = replica(runtime, rise=1)
    await member.start_once()
    handle = member.handle
    assert handle is not None
    member.report_refused("connection refused")
    first = member.last_error_at
    assert first is not None and state(member) is State.DOWN
    member.report_probe(handle, True)  # rise: back up on heartbeats alone
    assert state(member) is State.UP and (member.last_error, member.last_error_at) == (None, None)
    await eventually(lambda: time.time() > first)  # a later error must get a later stamp
    member.report_refused("connection refused")
    second = member.last_error_at
    assert second is not None and second > first
    await member.shutdown()


async def test_a_failed_start_is_stamped() -> None:
    runtime = FakeRuntime(failing_starts={"r1": 1})
    member = replica(runtime, restart_backoff_base=0.05, restart_backoff_max=0.05)
    before = time.time()
    member.launch()
    await eventually(lambda: member.state is State.BACKOFF)
    stamp = member.last_error_at
    assert member.last_error == "replica 'r1' exited during start-up"
    assert stamp is not None and before <= stamp <= time.time()
    await member.shutdown()
