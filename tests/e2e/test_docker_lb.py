"""The LB on a real Docker engine: `docker kill` under load, and the compose stack up and down."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.lb_support import ROOT, LBFactory, RunningLB, wait_until
from tests.load import seconds_to_recover
from tests.ports import free_port
from tests.runtimes import RuntimeUnderTest

pytestmark = pytest.mark.docker


# Request `docker_runtime` before `lb_factory`: fixtures tear down in reverse, so the LBs stop (and remove
# their replicas) before the runtime's cleanup removes the test network.
@pytest.fixture
def docker_runtime(request: pytest.FixtureRequest, docker_engine: Any) -> Iterator[RuntimeUnderTest]:
    runtime = RuntimeUnderTest("docker", request)
    yield runtime
    runtime.cleanup()


def replaced(lb: RunningLB, name: str, old_address: str) -> bool:
    row = lb.status().get(name, {})
    return bool(
        row.get("address") not in (None, old_address) and row.get("state") == "up" and row.get("on_ring")
    )


def test_docker_kill_under_load_no_failed_request(
    docker_runtime: RuntimeUnderTest, lb_factory: LBFactory, docker_engine: Any
) -> None:
    rt = docker_runtime.fresh()
    lb = lb_factory(replicas="3", **rt.settings)
    victim = rt.gen(2)[0]
    keys = [str(k) for k in range(60)]
    before = {k: lb.serving(k) for k in keys}
    old_address = lb.status()[victim]["address"]
    back_after = seconds_to_recover(
        lb.url,
        kill=docker_engine.containers.get(victim).kill,
        recovered=lambda: replaced(lb, victim, old_address),
        timeout=15,
    )
    assert back_after < 5.0, f"replacement took {back_after:.2f}s"
    assert lb.replicas() == rt.gen(1, 2, 3)
    assert {k: lb.serving(k) for k in keys} == before


def test_replica_names_must_be_valid_container_names(
    docker_runtime: RuntimeUnderTest, lb_factory: LBFactory
) -> None:
    rt = docker_runtime.fresh()
    lb = lb_factory(replicas="1", **rt.settings)
    for bad in ("Server 5", "a;rm -rf /", "-x", "../x", "x" * 70):
        response = lb.client.post("/add", json={"n": 1, "hostnames": [bad]})
        assert response.status_code == 400, response.text
        assert response.json()["status"] == "failure"
    assert lb.replicas() == rt.gen(1)


def compose(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_compose_up_serves_three_and_down_leaves_nothing(docker_engine: Any, base_image: str) -> None:
    port = free_port()  # CHLB_PORT: the stack publishes the LB here instead of 5000
    # The project's own Docker config folder, where scripts/docker-engine.sh links the compose plugin.
    env = {**os.environ, "BASE_IMAGE": base_image, "CHLB_PORT": str(port)}
    env["DOCKER_CONFIG"] = str(ROOT / ".docker")
    up = compose("up", "-d", "--build", env=env, timeout=900)
    assert up.returncode == 0, up.stderr
    try:

        def three_replicas() -> list[str] | None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/rep", timeout=1.0).json()
            except (httpx.HTTPError, ValueError):
                return None
            names: list[str] = body["message"]["replicas"]
            return names if len(names) == 3 else None

        names = wait_until(three_replicas, timeout=120, interval=0.2)
        assert names == ["server1", "server2", "server3"]
        seen = set()
        for k in range(300):
            response = httpx.get(f"http://127.0.0.1:{port}/home", params={"id": str(k)}, timeout=5.0)
            assert response.status_code == 200
            seen.add(response.json()["message"].split(":")[-1].strip())
        assert seen == set(names)
        # The image's builder stage compiled the hot path, and the LB runs that build.
        assert httpx.get(f"http://127.0.0.1:{port}/status", timeout=5.0).json()["compiled"] is True
        labelled = docker_engine.containers.list(filters={"label": "chlb.replica"})
        assert sorted(c.name for c in labelled) == names
    finally:
        down = compose("down", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert docker_engine.containers.list(all=True, filters={"label": "com.docker.compose.project=chlb"}) == []
    assert docker_engine.containers.list(all=True, filters={"label": "chlb.replica"}) == []
    assert [n for n in docker_engine.networks.list() if n.name == "chlb-net"] == []
    compose("down", "--volumes", env=env, timeout=60)  # the vote volume outlives `down` on purpose
