"""DockerRuntime against a real engine: names, start/stop, adoption, close, die events.

Each test gets its own label, network and name prefix (tests.docker_support.docker_scope), so runs
in parallel on one engine never touch each other's containers, and everything is removed afterwards.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from docker.errors import NotFound

from app.errors import InvalidRequestError, ReplicaExistsError, ReplicaStartError
from app.runtimes.base import ReplicaHandle
from app.runtimes.docker import DockerRuntime, create_docker_runtime
from app.settings import Settings

if TYPE_CHECKING:  # imported by pytest as a plugin below, so its asserts are rewritten
    from tests.docker_support import DockerScope

# The fixtures (docker_engine, docker_scope, ...); a no-op once tests/conftest.py registers them too.
pytest_plugins = ["tests.docker_support"]

SERVE_DEADLINE = 20.0
T = TypeVar("T", bound=Callable[..., object])


def on_engine(test: T) -> T:
    """Marks an async test that needs the real engine (skipped with its reason when none can start)."""
    marked: T = pytest.mark.docker(pytest.mark.anyio(test))
    return marked


DIE_EVENT_DEADLINE = 2.0


def runtime(scope: DockerScope, client: Any = None, **overrides: Any) -> DockerRuntime:
    """An runtime confined to this test's label, network and names."""
    options: dict[str, Any] = {
        "image": scope.image,
        "network": scope.network,
        "label": scope.label,
        "name_prefix": scope.prefix,
        "owner": scope.owner,
        **overrides,
    }
    return DockerRuntime(client if client is not None else scope.client, **options)


async def wait_serving(handle: ReplicaHandle, deadline: float = SERVE_DEADLINE) -> httpx.Response:
    """Poll the replica's /heartbeat through the handle's address until it answers 200."""
    end = time.monotonic() + deadline
    async with httpx.AsyncClient(timeout=httpx.Timeout(1.0, connect=0.3)) as client:
        while True:
            try:
                response = await client.get(f"http://{handle.address}/heartbeat")
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"{handle} did not serve /heartbeat within {deadline}s")
            await asyncio.sleep(0.02)


async def get_home(handle: ReplicaHandle) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        response = await client.get(f"http://{handle.address}/home")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def owned(scope: DockerScope, rt: DockerRuntime) -> AsyncIterator[DockerRuntime]:
    """Use `rt` for one test; close it afterwards, and it must leave no container of ours behind."""
    try:
        yield rt
    finally:
        await rt.close()
    assert scope.containers() == []


def exists(scope: DockerScope, container_id: object) -> bool:
    try:
        scope.client.containers.get(str(container_id))
    except NotFound:
        return False
    return True


# ----- names (no engine needed) -------------------------------------------------------------------
def offline(**overrides: Any) -> DockerRuntime:
    """Constructing connects to nothing: the client is made on first use."""

    def no_engine() -> Any:
        raise AssertionError("must not connect")

    options: dict[str, Any] = {"image": "x", "network": "n", "label": "l", **overrides}
    return DockerRuntime(no_engine, **options)


# What Docker itself takes as a container name (moby's validContainerNamePattern), within the 63
# characters of a DNS label: on the network, the LB reaches a replica by its name.
DOCKER_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def accepted(name: str) -> bool:
    """Whether the runtime lets `name` through to the engine (check_name raises when it refuses)."""
    try:
        offline().check_name(name)
    except InvalidRequestError:
        return False
    return True


@pytest.mark.parametrize("name", ["server1", "S5", "a.b_c-d", "9lives", "ab", "x" * 63])
def test_check_name_accepts_container_names(name: str) -> None:
    assert DOCKER_CONTAINER_NAME.fullmatch(name) and len(name) <= 63  # a container name, by Docker's rule
    assert accepted(name)


@pytest.mark.parametrize(
    "name",
    ["a b", "../x", "-x", ".x", "_x", "x" * 64, "x" * 70, "", "a", "Server 1", "é1", "x/y", "a\n", "$(id)"],
)
def test_check_name_rejects_what_docker_would(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="Invalid replica name"):
        offline().check_name(name)


def test_default_prefix_makes_valid_names() -> None:
    orch = offline()
    assert orch.name_prefix == DockerRuntime.DEFAULT_PREFIX == "server"
    orch.check_name(f"{orch.name_prefix}1")


def test_prefix_that_makes_invalid_names_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="replica prefix"):
        offline(name_prefix="Server ")


def test_factory_reads_settings() -> None:
    orch = create_docker_runtime(
        Settings(runtime="docker", docker_image="img:1", docker_network="net1", docker_label="lab")
    )
    assert (orch.kind, orch.image, orch.network, orch.label) == ("docker", "img:1", "net1", "lab")
    assert orch.name_prefix == "server"
    assert create_docker_runtime(Settings(replica_prefix="web-")).name_prefix == "web-"


# ----- against the engine ---------------------------------------------------------------------------


@pytest.fixture
def scope(docker_scope: DockerScope) -> DockerScope:
    """This test's own label, network and names on the real engine."""
    return docker_scope


@on_engine
async def test_start_serves_then_stop_removes(scope: DockerScope) -> None:
    orch = runtime(scope)
    name = scope.name("s1")
    try:
        handle = await orch.start(name)
        assert (handle.name, handle.host) == (name, "127.0.0.1")
        await wait_serving(handle)
        assert await get_home(handle) == {"message": f"Hello from Server: {name}", "status": "successful"}
        assert not orch.exited(handle)

        container = scope.client.containers.get(name)
        assert container.name == name
        assert container.labels[scope.label] == "1"
        assert container.labels[f"{scope.label}.owner"] == scope.owner
        assert f"SERVER_ID={name}" in container.attrs["Config"]["Env"]
        assert scope.network in container.attrs["NetworkSettings"]["Networks"]

        await orch.stop(handle)
        assert not exists(scope, handle.container_id)
        assert orch.exited(handle)
        await orch.stop(handle)  # idempotent
    finally:
        await orch.close()


@on_engine
@pytest.mark.parametrize("bad", ["a b", "../x", "-x", "x" * 70])
async def test_invalid_name_creates_nothing(docker_scope: DockerScope, bad: str) -> None:
    orch = runtime(docker_scope)
    with pytest.raises(InvalidRequestError):
        await orch.start(bad)
    await orch.close()
    assert docker_scope.containers() == []
    assert not docker_scope.network_exists()  # refused before touching the engine at all


@on_engine
async def test_name_taken_by_someone_else_is_refused_and_left_alone(scope: DockerScope) -> None:
    name = scope.name("s1")
    foreign = await asyncio.to_thread(scope.client.containers.create, scope.image, name=name)
    orch = runtime(scope)
    try:
        with pytest.raises(ReplicaExistsError, match="not started by this load balancer"):
            await orch.start(name)
        assert scope.client.containers.get(name).id == foreign.id
    finally:
        await orch.close()
        await asyncio.to_thread(foreign.remove, force=True)


@on_engine
async def test_leftover_of_ours_with_the_name_is_replaced(scope: DockerScope) -> None:
    name = scope.name("s1")
    first, second = runtime(scope, remove_on_stop=False), runtime(scope)
    try:
        old = await first.start(name)
        new = await second.start(name)
        assert new.container_id != old.container_id
        assert not exists(scope, old.container_id)
        assert [c.id for c in scope.containers()] == [new.container_id]
        await wait_serving(new)
    finally:
        await first.close()
        await second.close()
    assert scope.containers() == []


@on_engine
async def test_new_instance_adopts_running_replicas_without_duplicates(scope: DockerScope) -> None:
    import docker

    names = [scope.name(f"s{i}") for i in (1, 2, 3)]
    before = runtime(scope, remove_on_stop=False)  # an LB that goes away leaving its replicas
    handles = await asyncio.gather(*(before.start(n) for n in names))
    await asyncio.gather(*(wait_serving(h) for h in handles))
    dead = scope.client.containers.get(names[2])
    await asyncio.to_thread(dead.kill)
    await before.close()
    assert len(scope.containers()) == 3

    # the restarted LB: a fresh client of its own
    async with owned(scope, runtime(scope, client=docker.from_env)) as after:
        adopted = await after.adopt()
        assert sorted(h.name for h in adopted) == names[:2]
        assert not exists(scope, dead.id)  # our exited container is cleared, not adopted
        for handle in adopted:
            await wait_serving(handle)
            assert (await get_home(handle))["message"] == f"Hello from Server: {handle.name}"
            assert not after.exited(handle)

        again = await after.adopt()
        assert {id(h) for h in again} == {id(h) for h in adopted}
        assert len(scope.containers()) == 2

        await wait_serving(await after.start(names[2]))
        assert sorted(c.name for c in scope.containers()) == names


@on_engine
async def test_close_removes_everything_started_or_adopted(scope: DockerScope) -> None:
    leftover = runtime(scope, remove_on_stop=False)
    await leftover.start(scope.name("old"))
    await leftover.close()

    orch = runtime(scope)
    assert [h.name for h in await orch.adopt()] == [scope.name("old")]
    await asyncio.gather(orch.start(scope.name("s1")), orch.start(scope.name("s2")))
    assert len(scope.containers()) == 3
    await orch.close()
    assert scope.containers() == []
    with pytest.raises(ReplicaStartError, match="closed"):
        await orch.start(scope.name("s3"))
    assert scope.containers() == []


@on_engine
async def test_close_during_a_start_leaves_nothing(scope: DockerScope) -> None:
    orch = runtime(scope)
    await orch.adopt()  # connected, so the start below spends its time in the engine
    starting = asyncio.create_task(orch.start(scope.name("s1")))
    while not starting.done() and orch._inflight == 0:
        await asyncio.sleep(0.001)
    await orch.close()
    try:
        await starting  # either it finished first (then close removed it) or it was refused
    except ReplicaStartError:
        pass
    assert scope.containers() == []


@on_engine
async def test_die_event_marks_exited_and_calls_on_exit(scope: DockerScope) -> None:
    orch = runtime(scope)
    exits: list[ReplicaHandle] = []
    fired = asyncio.Event()

    def on_exit(handle: ReplicaHandle) -> None:
        exits.append(handle)
        fired.set()

    orch.on_exit = on_exit
    async with owned(scope, orch):
        victim, stopped = await asyncio.gather(orch.start(scope.name("s1")), orch.start(scope.name("s2")))
        await asyncio.gather(wait_serving(victim), wait_serving(stopped))
        await orch.stop(stopped)  # a deliberate stop is not an exit to report

        killed_at = time.monotonic()
        container = scope.client.containers.get(victim.container_id)
        await asyncio.to_thread(container.kill)
        await asyncio.wait_for(fired.wait(), DIE_EVENT_DEADLINE)
        assert time.monotonic() - killed_at < DIE_EVENT_DEADLINE
        assert orch.exited(victim)
        # Events arrive in order: had the stop been reported, it would be first in the list.
        assert exits == [victim]


@on_engine
async def test_in_container_handle_is_the_name_on_the_network(scope: DockerScope) -> None:
    name = scope.name("s1")
    async with owned(scope, runtime(scope, in_container=True)) as orch:
        handle = await orch.start(name)
        assert (handle.host, handle.port) == (name, 5000)
        # Another container on the network (as the LB would be) reaches it by name via Docker's DNS.
        probe = (
            "import time, urllib.request\n"
            "end = time.monotonic() + 20\n"
            "while True:\n"
            "    try:\n"
            f"        body = urllib.request.urlopen('http://{handle.address}/home', timeout=1).read()\n"
            "        print(body.decode())\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.monotonic() > end: raise\n"
            "        time.sleep(0.05)\n"
        )
        output = await asyncio.to_thread(
            scope.client.containers.run,
            scope.image,
            ["python", "-c", probe],
            name=scope.name("probe"),
            network=scope.network,
            labels={scope.label: "probe"},
            remove=True,
        )
        assert f"Hello from Server: {name}" in output.decode()
