"""Shared fixtures: real LBs as child processes, isolated from the developer's LB_* environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lb_support import LBFactory, RunningLB, echo_command, start_lb
from tests.runtimes import RUNTIMES, RuntimeUnderTest

__all__ = ["echo_command"]  # tests import it from here too

pytest_plugins = [
    "tests.docker_support",
    "tests.swarm_support",
    "tests.browser_support",
    "tests.postgres_support",
]


@pytest.fixture(autouse=True)
def _isolate_lb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("LB_"):
            monkeypatch.delenv(key)


@pytest.fixture
def lb_factory(tmp_path: Path) -> Iterator[LBFactory]:
    """Start LBs with chosen settings: `lb_factory(replicas="2", strategy="ketama")`."""
    factory = LBFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> Iterator[RuntimeUnderTest]:
    """Each runtime in turn; Docker tests skip with the reason when no engine can be started."""
    chosen = RuntimeUnderTest(request.param, request)
    yield chosen
    chosen.cleanup()


@pytest.fixture(scope="module")
def workers() -> str:
    """LB_WORKERS for a module's LBs: 1 unless the module overrides this fixture with params."""
    return "1"


@pytest.fixture(scope="module")
def lb(
    tmp_path_factory: pytest.TempPathFactory, runtime: RuntimeUnderTest, workers: str
) -> Iterator[RunningLB]:
    """One LB with 3 default replicas on `runtime`, shared by a module's read-mostly tests."""
    own = runtime.fresh()
    running = start_lb(tmp_path_factory.mktemp("lb"), workers=workers, **own.settings)
    running.runtime = own
    yield running
    running.stop()


@pytest.fixture
def anyio_backend() -> str:
    """The suite's one async runner: anyio's pytest plugin on asyncio (a module may pick its own loop)."""
    return "asyncio"
