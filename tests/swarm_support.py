"""Swarm fixtures: docker-stack.yml deployed by scripts/swarm.sh under names unique to one test run.

The script inits a single-node swarm when the engine is in none and remembers it in a state file of the
run; `make swarm-down` (same names) then removes the stack, the replica services the LBs created and
the network, and leaves the swarm only if the script created it. Nothing else on the engine is touched.
Images: chlb-lb:swarm-test, chlb-replica:swarm-test and chlb-votes-db:swarm-test, tags only these tests
use (other tests build chlb-lb:latest from other trees at the same time), rebuilt from cache on each run.
The module stack's replicas run chlb-replica:swarm-echo-test (tests/echo_replica.py: the contract's
/home and /heartbeat plus /slow, for requests kept in flight); the up/down test runs the real replica.
Each stack has its own admin token and secrets folder; `make swarm-down` keeps the votes' volume, which
the fixtures then remove (asserting first that it was kept).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
LB_IMAGE = "chlb-lb:swarm-test"
REPLICA_IMAGE = "chlb-replica:swarm-test"
VOTES_DB_IMAGE = "chlb-votes-db:swarm-test"
ECHO_REPLICA_IMAGE = "chlb-replica:swarm-echo-test"
LABEL = "chlb.test.swarm"  # not chlb.replica: the compose test asserts that no chlb.replica is left
UP_TIMEOUT = 900.0  # a cold image build included


@dataclass
class SwarmStack:
    """One deployment of docker-stack.yml: its names, its two LB instances' ports, and clients."""

    client: Any  # docker.DockerClient
    token: str
    state_file: Path
    base_image: str
    replicas: int = 3
    replica_image: str = REPLICA_IMAGE
    build_replica: bool = True  # False: replica_image exists already (the echo replica)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    port_a: int = field(default_factory=free_port)
    port_b: int = field(default_factory=free_port)

    @property
    def auth(self) -> dict[str, str]:
        """The header that the admin routes (/add, /rm) need on this stack."""
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def secrets_dir(self) -> Path:
        return self.state_file.parent / "secrets"

    @property
    def volume(self) -> str:
        """The votes' volume, which swarm-down keeps."""
        return f"{self.stack}_votes-db-data"

    @property
    def stack(self) -> str:
        return f"t{self.token}"

    @property
    def network(self) -> str:
        return f"t{self.token}-net"

    def name(self, k: int) -> str:
        """The k-th generated replica (service) name."""
        return f"t{self.token}-s{k}"

    @property
    def urls(self) -> tuple[str, str]:
        return f"http://127.0.0.1:{self.port_a}", f"http://127.0.0.1:{self.port_b}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BASE_IMAGE": self.base_image,
            "SWARM_STACK": self.stack,
            "SWARM_CLUSTER": self.stack,
            "SWARM_LABEL": LABEL,
            "SWARM_NETWORK": self.network,
            "SWARM_PORT_A": str(self.port_a),
            "SWARM_PORT_B": str(self.port_b),
            "SWARM_REPLICAS": str(self.replicas),
            "SWARM_PREFIX": f"t{self.token}-s",
            "SWARM_LB_IMAGE": LB_IMAGE,
            "SWARM_REPLICA_IMAGE": self.replica_image,
            "SWARM_BUILD_REPLICA": "1" if self.build_replica else "0",
            "SWARM_VOTES_DB_IMAGE": VOTES_DB_IMAGE,
            "SWARM_STATE": str(self.state_file),
            "SWARM_SECRETS": str(self.secrets_dir),
            "SWARM_ADMIN_TOKEN": self.admin_token,
            "SWARM_DEADLINE": "120",
        }

    def up(self) -> subprocess.CompletedProcess[str]:
        """What `make swarm-up` runs once the engine and the base image exist."""
        return self._run([str(ROOT / "scripts" / "swarm.sh"), "up"], UP_TIMEOUT)

    def down(self) -> subprocess.CompletedProcess[str]:
        """`make swarm-down` with this run's names."""
        variables = [f"{k}={v}" for k, v in self.env().items() if k.startswith("SWARM_")]
        return self._run(["make", "--no-print-directory", "swarm-down", *variables], 300.0)

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )

    # ----- what the engine holds of ours -----------------------------------------------------------
    def services(self) -> list[str]:
        """Names of the services of this run: the stack's LBs and the replicas they created."""
        if not (self.client.info().get("Swarm") or {}).get("ControlAvailable"):
            return []  # in no swarm (e.g. after swarm-down left the one it made): no services at all
        found = self.client.services.list(filters={"label": f"{LABEL}={self.stack}"})
        found += self.client.services.list(filters={"label": f"com.docker.stack.namespace={self.stack}"})
        return sorted(s.name for s in found)

    def containers(self) -> list[str]:
        """Names of this run's containers, running or not (the LBs' and the replicas' tasks)."""
        labels = [f"{LABEL}={self.stack}", f"com.docker.stack.namespace={self.stack}"]
        return sorted(name for label in labels for name in container_names(self.client, label))

    def stack_secrets(self) -> list[str]:
        """Names of the Swarm secrets the stack made (none once it is removed)."""
        if not (self.client.info().get("Swarm") or {}).get("ControlAvailable"):
            return []
        found = self.client.secrets.list(filters={"label": f"com.docker.stack.namespace={self.stack}"})
        return sorted(secret.name for secret in found)

    def remove_volume(self) -> bool:
        """Remove the votes' volume that swarm-down kept; False if there was none."""
        from docker.errors import NotFound

        try:
            volume = self.client.volumes.get(self.volume)
        except NotFound:
            return False
        volume.remove(force=True)
        return True

    def networks(self) -> list[str]:
        return [n.name for n in self.client.networks.list(names=[self.network]) if n.name == self.network]

    def task_container(self, service: str) -> Any:
        """The running container of `service`'s task."""
        # sparse: no inspect per container, which races with the engine removing old tasks' containers
        running = self.client.containers.list(
            sparse=True, filters={"label": f"com.docker.swarm.service.name={service}"}
        )
        assert len(running) == 1, f"{service}: {[c.id[:12] for c in running]}"
        return running[0]


def container_names(client: Any, label: str) -> list[str]:
    """Containers carrying `label`, running or not, from one listing (no inspect that could race)."""
    return [c["Names"][0].lstrip("/") for c in client.api.containers(all=True, filters={"label": label})]


def engine_snapshot(client: Any) -> dict[str, Any]:
    """What swarm-up may change on the engine: its swarm state, swarm networks, docker_gwbridge, services.

    Only swarm-scoped networks and docker_gwbridge are compared: other tests create bridge networks now.
    """
    swarm = client.info().get("Swarm") or {}
    active = swarm.get("LocalNodeState") == "active"
    networks = [n.name for n in client.networks.list() if n.attrs.get("Scope") == "swarm"]
    networks += [
        n.name for n in client.networks.list(names=["docker_gwbridge"]) if n.name == "docker_gwbridge"
    ]
    return {
        "swarm": swarm.get("LocalNodeState"),
        "node": swarm.get("NodeID"),
        "networks": sorted(networks),
        "services": sorted(s.id for s in client.services.list()) if active else [],
    }


def fresh_stack(
    client: Any, base_image: str, workdir: Path, replicas: int = 3, replica_image: str | None = None
) -> SwarmStack:
    """Names, ports and a state file for one deployment (nothing deployed yet)."""
    token = uuid.uuid4().hex[:6]
    if replica_image is None:
        return SwarmStack(client, token, workdir / "swarm-state", base_image, replicas=replicas)
    return SwarmStack(
        client,
        token,
        workdir / "swarm-state",
        base_image,
        replicas=replicas,
        replica_image=replica_image,
        build_replica=False,
    )


@pytest.fixture(scope="session")
def echo_replica_image(docker_engine: Any, base_image: str) -> str:
    """tests/swarm-echo-replica.Dockerfile built as chlb-replica:swarm-echo-test (a context of its own:
    the project's .dockerignore keeps tests/ out of the images)."""
    context = Path(tempfile.mkdtemp(prefix="chlb-echo-image-"))
    try:
        (context / "tests").mkdir()
        for name in ("__init__.py", "echo_replica.py"):
            shutil.copy(ROOT / "tests" / name, context / "tests" / name)
        shutil.copy(ROOT / "tests" / "swarm-echo-replica.Dockerfile", context / "Dockerfile")
        docker_engine.images.build(
            path=str(context),
            tag=ECHO_REPLICA_IMAGE,
            buildargs={"BASE_IMAGE": base_image},
            rm=True,
            forcerm=True,
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return ECHO_REPLICA_IMAGE


@pytest.fixture(scope="module")
def swarm_stack(
    docker_engine: Any, base_image: str, echo_replica_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SwarmStack]:
    """docker-stack.yml up with two LB instances, 3 (echo) replicas and votes-db; `make swarm-down` and
    the votes' volume removed afterwards."""
    stack = fresh_stack(
        docker_engine, base_image, tmp_path_factory.mktemp("swarm"), replica_image=echo_replica_image
    )
    up = stack.up()
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield stack
    finally:
        down = stack.down()
        kept = stack.remove_volume()
        assert down.returncode == 0, down.stderr[-3000:]
        assert kept or up.returncode != 0, f"swarm-down removed the votes' volume {stack.volume}"


def replicas_of(url: str) -> list[str] | None:
    """The instance's /rep, or None while it does not answer."""
    try:
        names: list[str] = httpx.get(f"{url}/rep", timeout=2.0).json()["message"]["replicas"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return names


def status_of(url: str) -> dict[str, dict[str, Any]] | None:
    """The instance's /status rows by name, or None while it does not answer."""
    try:
        rows = httpx.get(f"{url}/status", timeout=2.0).json()["replicas"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return {row["name"]: row for row in rows}
