"""Every lifecycle transition, in process, against a fake runtime: no process, no socket.

Each test drives a real LocalMembership (its health monitor included) and holds starts or probes open with
gates to force the interleavings that matter: a report racing a probe, a removal racing a start.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from app.control.lifecycle import LifecyclePolicy, State
from app.control.local_membership import LocalMembership
from app.errors import ReplicaStartError
from app.settings import Settings
from tests.fake_runtime import FakeRuntime, GatedProber, make_membership
from tests.polling import eventually

# One async runner for every async test (anyio's pytest plugin, on asyncio), bounded: none may hang the suite.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]


def states(membership: LocalMembership) -> dict[str, str]:
    return {m.name: m.state.value for m in membership.replicas()}


def on_ring(membership: LocalMembership) -> set[str]:
    return set(membership.table.upstreams)


def events(caplog: pytest.LogCaptureFixture, replica: str) -> list[str]:
    """The lifecycle events logged for `replica`, in order."""
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if f'replica="{replica}"' in message or f"replica={replica} " in message + " ":
            match = re.match(r"event=(\w+)", message)
            if match:
                found.append(match.group(1))
    return found


async def started_membership(
    count: int = 3, *, new_names: bool = False, **policy: Any
) -> tuple[LocalMembership, FakeRuntime, GatedProber]:
    runtime, prober = FakeRuntime(), GatedProber()
    membership = make_membership(runtime, prober, new_names=new_names, **policy)
    await membership.start(count)
    return membership, runtime, prober


async def test_boot_puts_every_member_on_the_ring_and_close_stops_them() -> None:
    membership, runtime, _ = await started_membership(3)
    assert membership.names() == ["r1", "r2", "r3"]
    assert states(membership) == {"r1": "up", "r2": "up", "r3": "up"}
    assert on_ring(membership) == {"r1", "r2", "r3"}
    assert membership.task("r1") is None  # no engine, no task view for /status
    await eventually(lambda: all(m.last_probe for m in membership.replicas()))  # the monitor probes them
    await membership.close()
    assert runtime.closed and not runtime.running


async def test_failed_heartbeats_take_a_member_down_then_replace_it_under_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    membership, runtime, _ = await started_membership(3)
    (old,) = runtime.instances_of("r2")
    old.healthy = False  # alive but answering 503: only heartbeats can tell
    await eventually(lambda: membership.members["r2"].restarts == 1 and states(membership)["r2"] == "up")
    assert runtime.instances_of("r2") != [old] and not old.alive
    assert 'event=down replica=r2 reason="2 failed heartbeats" detected_by=heartbeat' in caplog.text
    assert events(caplog, "r2") == ["spawning", "up", "down", "replacing", "spawning", "up"]
    await membership.close()


async def test_passive_report_takes_a_member_off_the_ring_until_it_rises_again() -> None:
    membership, runtime, _ = await started_membership(3, rise=3)
    membership.report_failure("r1", "connection refused")
    # at once, not at the next probe
    assert states(membership)["r1"] == "down" and "r1" not in on_ring(membership)
    await eventually(lambda: states(membership)["r1"] == "up")  # three good heartbeats: a blip, not a death
    assert membership.members["r1"].restarts == 0 and len(runtime.instances_of("r1")) == 1
    assert "r1" in on_ring(membership)
    await membership.close()


async def test_runtime_exit_report_replaces_at_once() -> None:
    membership, runtime, prober = await started_membership(3)
    prober.hold()  # no heartbeat can notice: only the runtime's report
    runtime.kill("r3")
    assert states(membership)["r3"] == "replacing" and "r3" not in on_ring(membership)
    prober.release()
    await eventually(lambda: states(membership)["r3"] == "up")
    assert membership.members["r3"].restarts == 1 and len(runtime.instances_of("r3")) == 1
    await membership.close()


async def test_passive_failure_report_during_a_probe() -> None:
    membership, runtime, prober = await started_membership(3)
    prober.hold()
    await eventually(lambda: prober.in_flight == 3)  # one probe per member in flight
    runtime.kill("r1", report=False)  # a runtime without exit events
    membership.report_failure("r1", "connection refused")
    membership.report_failure("r1", "connection refused")  # a second report is not a second transition
    assert states(membership)["r1"] == "down" and "r1" not in on_ring(membership)
    prober.release()  # the probe in flight fails, and the runtime says the instance exited
    await eventually(lambda: states(membership)["r1"] == "up" and membership.members["r1"].restarts == 1)
    assert [m.restarts for m in membership.replicas()] == [1, 0, 0]
    await membership.close()


async def test_new_name_replacement_racing_a_probe(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    membership, runtime, prober = await started_membership(3, new_names=True)
    prober.hold()
    await eventually(lambda: prober.in_flight == 3)
    old = membership.members["r2"]
    runtime.kill("r2")  # replaced under a new name while a probe of the old instance is in flight
    await eventually(lambda: "r4" in membership.members)
    prober.release()  # the stale verdict on r2's old instance must change nothing
    await eventually(lambda: states(membership) == {"r1": "up", "r3": "up", "r4": "up"})
    assert old.state is State.REMOVED and "r2" not in membership.names()
    assert runtime.starts.count("r2") == 1 and not runtime.instances_of("r2")
    assert membership.members["r4"].restarts == 1
    assert 'event=removed replica=r2 reason="replaced under a new name" successor=r4' in caplog.text
    await membership.close()


async def test_removal_during_a_replacement() -> None:
    membership, runtime, _ = await started_membership(3)
    runtime.start_gate = asyncio.Event()  # the replacement's start hangs until the gate opens
    runtime.kill("r1")
    await eventually(lambda: runtime.starts.count("r1") == 2)
    assert await membership.remove(1, ["r1"]) == ["r1"]
    assert membership.names() == ["r2", "r3"] and "r1" not in on_ring(membership)
    runtime.start_gate.set()  # the start completes after its owner gave up: what it made is stopped
    await eventually(lambda: [m.name for m in membership.replicas()] == ["r2", "r3"])
    assert not runtime.instances_of("r1")
    assert runtime.starts.count("r1") == 2  # and nobody starts it again
    await membership.close()


async def test_removal_during_a_start_after_a_back_off() -> None:
    runtime, prober = FakeRuntime(failing_starts={"r2": 1}), GatedProber()
    membership = make_membership(runtime, prober)
    await membership.start(2)
    assert states(membership)["r2"] == "backoff" and "r2" not in on_ring(membership)
    runtime.start_gate = asyncio.Event()
    await eventually(lambda: runtime.starts.count("r2") == 2)  # the retry is in flight
    await membership.remove(1, ["r2"])
    runtime.start_gate.set()
    await eventually(lambda: [m.name for m in membership.replicas()] == ["r1"])
    assert not runtime.instances_of("r2") and runtime.starts.count("r2") == 2
    await membership.close()


async def test_crash_loop_backs_off_exponentially_up_to_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    runtime, prober = FakeRuntime(failing_starts={"r1": 5}), GatedProber()
    membership = make_membership(runtime, prober)
    await membership.start(1)
    await eventually(lambda: states(membership)["r1"] == "up")
    delays = [
        float(d) for d in re.findall(r"event=start_failed replica=r1 .* retry_in=([\d.]+)", caplog.text)
    ]
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.08]  # doubling from the base, capped
    member = membership.members["r1"]
    assert runtime.starts.count("r1") == 6 and member.attempts == 0 and member.restarts == 0
    await membership.close()


async def test_shutdown_during_a_start_leaves_nothing_running() -> None:
    membership, runtime, _ = await started_membership(2)
    runtime.start_gate = asyncio.Event()
    runtime.kill("r2")
    await eventually(lambda: runtime.starts.count("r2") == 2)
    closing = asyncio.create_task(membership.close())
    for _ in range(50):  # let close() run as far as it can: it must wait for the start in flight
        await asyncio.sleep(0)
    assert not closing.done()
    runtime.start_gate.set()  # a start still in the runtime when we shut down: waited for, then stopped
    await closing
    assert runtime.closed and not runtime.running


async def test_removal_drains_requests_in_flight_first() -> None:
    membership, runtime, _ = await started_membership(2)
    member = membership.members["r1"]
    assert member.upstream is not None
    member.upstream.in_flight = 2  # two requests on their way (the upstream client counts them)
    await membership.remove(1, ["r1"])
    assert membership.names() == ["r2"] and "r1" not in on_ring(membership)
    assert states(membership) == {"r1": "draining", "r2": "up"} and runtime.instances_of("r1")
    member.upstream.in_flight = 0
    await eventually(lambda: states(membership) == {"r2": "up"})
    assert member.state is State.REMOVED and not runtime.instances_of("r1")
    await membership.close()


async def test_drain_gives_up_after_the_timeout() -> None:
    membership, runtime, _ = await started_membership(2, drain_timeout=0.05)
    member = membership.members["r2"]
    assert member.upstream is not None
    member.upstream.in_flight = 1  # never finishes
    await membership.remove(1, ["r2"])
    await eventually(lambda: member.state is State.REMOVED)
    assert not runtime.instances_of("r2")
    await membership.close()


async def test_a_reused_name_waits_for_its_draining_predecessor() -> None:
    membership, runtime, _ = await started_membership(1)
    old = membership.members["r1"]
    assert old.upstream is not None
    old.upstream.in_flight = 1
    await membership.remove(1, ["r1"])
    adding = asyncio.create_task(membership.add(1, ["r1"]))
    await eventually(lambda: old.state is State.DRAINING)
    assert not adding.done() and runtime.starts.count("r1") == 1
    old.upstream.in_flight = 0
    assert await adding == ["r1"]
    assert states(membership) == {"r1": "up"} and len(runtime.instances_of("r1")) == 1
    await membership.close()


async def test_add_is_all_or_nothing() -> None:
    membership, runtime, _ = await started_membership(1)
    runtime.failing_starts["bad"] = 1
    with pytest.raises(ReplicaStartError, match="nothing was changed"):
        await membership.add(2, ["good", "bad"])
    assert membership.names() == ["r1"] and on_ring(membership) == {"r1"}
    assert not runtime.instances_of("good") and not runtime.instances_of("bad")
    assert await membership.add(1, ["good"]) == ["good"]
    assert on_ring(membership) == {"good", "r1"}
    await membership.close()


def test_backoff_doubles_up_to_its_cap_and_never_overflows() -> None:
    policy = LifecyclePolicy.from_settings(Settings(restart_backoff_max=30))
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    # Hours of crash-looping: ~1,000+ failed starts in a row must still give the cap, not OverflowError.
    assert policy.backoff(2000) == 30
