"""Docker fixtures: a real engine (started when it is not running), our images, per-test isolation.

Register them with `pytest_plugins = ["tests.docker_support"]` in tests/conftest.py (or import them
into a test module). Tests that use them carry `@pytest.mark.docker`.

The only skip is "no engine can be started here" (no dockerd, not root, ...), with the script's reason.
Once an engine answers, a failure to build an image is a test error, not a skip.
Images: `chlb-replica:test` (and the base image chlb-base:bookworm where Docker Hub is unreachable)
stay cached between runs: the tags are ours, and a rebuild from cache takes ~1 s.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPLICA_TEST_IMAGE = "chlb-replica:test"
ENGINE_DEADLINE = 180.0
BASE_DEADLINE = 600.0  # debootstrap of the local base image: ~45 s, more on a slow mirror


def _script(name: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Any]:
    """A docker client talking to a running engine; starts dockerd via scripts/docker-engine.sh if needed."""
    docker = pytest.importorskip("docker")
    try:
        started = _script("docker-engine.sh", timeout=ENGINE_DEADLINE)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Docker engine: scripts/docker-engine.sh did not run: {exc}")
    if started.returncode != 0:
        reason = started.stderr.strip().splitlines()[-3:] or [f"exit status {started.returncode}"]
        pytest.skip("no Docker engine: " + " | ".join(reason))
    client = docker.from_env()
    client.ping()
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_engine: Any) -> str:
    """python:3.12-slim when present or pullable, else the local Debian base (built once, cached)."""
    picked = _script("build-base-image.sh", "--pick", timeout=BASE_DEADLINE)
    if picked.returncode != 0 or not picked.stdout.strip():
        raise RuntimeError(f"scripts/build-base-image.sh --pick failed:\n{picked.stderr}")
    return picked.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def replica_image(docker_engine: Any, base_image: str) -> str:
    """Dockerfile.replica built as chlb-replica:test (kept: the tag is ours; later builds hit the cache)."""
    docker_engine.images.build(
        path=str(ROOT),
        dockerfile="Dockerfile.replica",
        tag=REPLICA_TEST_IMAGE,
        buildargs={"BASE_IMAGE": base_image},
        rm=True,
        forcerm=True,
    )
    return REPLICA_TEST_IMAGE


@dataclass
class DockerScope:
    """Names unique to one test, so parallel runs on one engine never see each other's containers."""

    client: Any
    image: str
    token: str
    label: str
    network: str
    prefix: str
    owner: str = "test"

    def name(self, suffix: str) -> str:
        """A container name unique to this test: `t<token>-<suffix>`."""
        return f"t{self.token}-{suffix}"

    def containers(self, **filters: str) -> list[Any]:
        """Every container (running or not) that carries this test's label."""
        return list(self.client.containers.list(all=True, filters={"label": self.label, **filters}))

    def network_exists(self) -> bool:
        return any(net.name == self.network for net in self.client.networks.list(names=[self.network]))

    def cleanup(self) -> None:
        """Remove this test's containers, then its network; safe to call twice."""
        from docker.errors import NotFound

        for container in self.containers():
            try:
                container.remove(force=True, v=True)
            except NotFound:
                pass
        for net in self.client.networks.list(names=[self.network]):
            if net.name == self.network:
                try:
                    net.remove()
                except NotFound:
                    pass


@pytest.fixture
def docker_scope(docker_engine: Any, replica_image: str) -> Iterator[DockerScope]:
    """A unique label, network and name prefix for one test; everything carrying them is removed after."""
    token = uuid.uuid4().hex[:8]
    scope = DockerScope(
        client=docker_engine,
        image=replica_image,
        token=token,
        label=f"chlb.test.{token}",
        network=f"chlb-test-{token}",
        prefix=f"t{token}-s",
    )
    try:
        yield scope
    finally:
        scope.cleanup()
