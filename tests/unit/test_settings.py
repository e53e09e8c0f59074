"""Settings read from LB_* variables, old names included."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize("variable", ["LB_RUNTIME", "LB_BACKEND"])
def test_runtime_is_read_from_its_new_and_its_old_name(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "docker")
    assert Settings().runtime == "docker"


def test_runtime_defaults_to_local_processes() -> None:
    assert Settings().runtime == "process"
    assert Settings(runtime="docker").runtime == "docker"  # tests and embedders pass the field name


def test_drain_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_DRAIN_TIMEOUT", "2.5")
    assert Settings().drain_timeout == 2.5


def test_the_new_runtime_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_BACKEND", "docker")  # what the LB image sets
    monkeypatch.setenv("LB_RUNTIME", "swarm")  # what docker-stack.yml sets
    assert Settings().runtime == "swarm"


def test_swarm_runtime_puts_membership_in_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.control.engine_membership import EngineMembership
    from app.control.local_membership import LocalMembership
    from app.main import make_membership
    from app.ring import RendezvousStrategy
    from app.runtimes.swarm import SwarmRuntime

    monkeypatch.setenv("LB_SWARM_CLUSTER", "blue")
    monkeypatch.setenv("LB_SWARM_NETWORK", "blue-net")
    settings = Settings(runtime="swarm")
    membership = make_membership(settings, RendezvousStrategy())  # no engine call until start()
    assert isinstance(membership, EngineMembership)
    assert isinstance(membership.runtime, SwarmRuntime)
    assert (membership.runtime.cluster, membership.runtime.network) == ("blue", "blue-net")
    assert membership.runtime.name_prefix == "server"
    assert type(make_membership(Settings(), RendezvousStrategy())) is LocalMembership


def test_a_swarm_replica_gets_at_least_the_drain_timeout_to_stop() -> None:
    """The engine SIGKILLs a stopped task after its grace period: requests in flight need LB_DRAIN_TIMEOUT."""
    from app.runtimes.swarm import create_swarm_runtime

    assert create_swarm_runtime(Settings(_env_file=None)).stop_grace == 10.0
    assert create_swarm_runtime(Settings(drain_timeout=30, _env_file=None)).stop_grace == 30.0
