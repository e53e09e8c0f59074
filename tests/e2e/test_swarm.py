"""Two LB instances over one real single-node Docker Swarm: one membership, held by the engine, one
vote database (the stack's votes-db service), one admin token (a Swarm secret).

The instances run as swarm services of docker-stack.yml (the replicas are only reachable on the
overlay network) and answer on host-mode ports on 127.0.0.1; every request here goes to loopback.
One stack serves the whole module (swarm_stack); the up/down test deploys a small one of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.load import Load, VoteLoad
from tests.polling import eventually, wait_until
from tests.swarm_support import (
    LABEL,
    SwarmStack,
    container_names,
    engine_snapshot,
    fresh_stack,
    replicas_of,
    status_of,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]  # a cold image build included

CONVERGE_SECONDS = 1.0  # the bound: every instance's /rep shows a change within 1 s
KEYS = 10_000


def all_up(stack: SwarmStack, names: list[str]) -> Callable[[], bool]:
    """Both instances list exactly `names`, all on their rings (so both rings are built from them)."""

    def check() -> bool:
        for url in stack.urls:
            rows = status_of(url)
            if rows is None or sorted(rows) != sorted(names):
                return False
            if not all(row["state"] == "up" and row["on_ring"] for row in rows.values()):
                return False
        return True

    return check


def converged(stack: SwarmStack, names: list[str]) -> Callable[[], bool]:
    return lambda: all(replicas_of(url) == names for url in stack.urls)


def without(stack: SwarmStack, name: str) -> Callable[[], bool]:
    return lambda: name not in stack.services()


def add(url: str, names: list[str], auth: dict[str, str]) -> None:
    body = {"n": len(names), "hostnames": names}
    response = httpx.post(f"{url}/add", json=body, headers=auth, timeout=60.0)
    assert response.status_code == 200, response.text


def remove(url: str, names: list[str], auth: dict[str, str]) -> None:
    body = {"n": len(names), "hostnames": names}
    response = httpx.request("DELETE", f"{url}/rm", json=body, headers=auth, timeout=30.0)
    assert response.status_code == 200, response.text


def route(url: str, key: int) -> str:
    """The replica that answers /home for `key` through the instance at `url`."""
    response = httpx.get(f"{url}/home", params={"id": str(key)}, timeout=10.0)
    assert response.status_code == 200, response.text
    name: str = response.json()["message"].split(":")[-1].strip()
    return name


def routes(url: str, keys: range) -> dict[str, str]:
    """Which replica answers /home for each key through the instance at `url` (bounded: one pass)."""

    def serve(chunk: range) -> dict[str, str]:
        out: dict[str, str] = {}
        with httpx.Client(base_url=url, timeout=10.0) as client:
            for k in chunk:
                response = client.get("/home", params={"id": str(k)})
                assert response.status_code == 200, response.text
                out[str(k)] = response.json()["message"].split(":")[-1].strip()
        return out

    step = len(keys) // 8 + 1
    with ThreadPoolExecutor(8) as pool:
        parts = pool.map(serve, [keys[i : i + step] for i in range(0, len(keys), step)])
        return {k: v for part in parts for k, v in part.items()}


def test_swarm_up_then_down_leaves_the_engine_as_found(
    docker_engine: Any, base_image: str, tmp_path: Path
) -> None:
    before = engine_snapshot(docker_engine)
    stack = fresh_stack(docker_engine, base_image, tmp_path, replicas=1)
    stack.admin_token = ""  # none given: swarm-up generates one and keeps it in a file
    try:
        up = stack.up()
        assert up.returncode == 0, up.stderr[-3000:]
        wait_until(converged(stack, [stack.name(1)]), timeout=30)
        lbs = [f"{stack.stack}_lb-a", f"{stack.stack}_lb-b", f"{stack.stack}_votes-db"]
        assert stack.services() == sorted([*lbs, stack.name(1)])
        token_file = stack.secrets_dir / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        generated = token_file.read_text().strip()
        assert len(generated) >= 32 and f"generated an admin token in {token_file}" in up.stderr
        assert generated not in up.stdout + up.stderr  # said where it is, never what it is
        a = stack.urls[0]
        assert httpx.post(f"{a}/add", json={"n": 1}, timeout=10).status_code == 401
        assert len(stack.stack_secrets()) == 2
    finally:
        down = stack.down()
        kept = stack.remove_volume()
    assert down.returncode == 0, down.stderr[-3000:]
    assert kept, f"swarm-down removed the votes' volume {stack.volume}"
    assert f"docker volume rm {stack.volume}" in down.stderr
    assert stack.services() == []
    assert stack.containers() == []
    assert stack.networks() == []
    assert stack.stack_secrets() == []
    assert engine_snapshot(docker_engine) == before
    assert not stack.state_file.exists()


def test_right_after_swarm_up_both_instances_route_1000_keys_to_the_same_replica(
    swarm_stack: SwarmStack,
) -> None:
    """The first test on the module's stack: swarm-up returned when both /readyz said 200, just now."""
    a, b = swarm_stack.urls
    keys = range(1000)
    through_a, through_b = routes(a, keys), routes(b, keys)  # every answer a 200, or the test fails
    disagree = [k for k in through_a if through_a[k] != through_b[k]]
    assert disagree == [], f"{len(disagree)} of 1000 keys disagree, e.g. {disagree[:5]}"
    assert set(through_a.values()) == {swarm_stack.name(k) for k in (1, 2, 3)}


def test_admin_routes_need_the_token_on_both_instances(swarm_stack: SwarmStack) -> None:
    base = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(converged(swarm_stack, base), timeout=30)
    extra = swarm_stack.name(6)
    body = {"n": 1, "hostnames": [extra]}
    for url in swarm_stack.urls:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            response = httpx.post(f"{url}/add", json=body, headers=headers, timeout=10.0)
            assert response.status_code == 401, response.text
            assert response.json()["status"] == "failure"
            removal = httpx.request("DELETE", f"{url}/rm", json=body, headers=headers, timeout=10.0)
            assert removal.status_code == 401, removal.text
    assert extra not in swarm_stack.services()
    add(swarm_stack.urls[0], [extra], swarm_stack.auth)
    wait_until(converged(swarm_stack, [*base, extra]), timeout=CONVERGE_SECONDS)
    remove(swarm_stack.urls[1], [extra], swarm_stack.auth)
    wait_until(converged(swarm_stack, base), timeout=CONVERGE_SECONDS)
    assert (swarm_stack.secrets_dir / "admin-token").read_text().strip() == swarm_stack.admin_token


def test_votes_through_either_instance_are_one_poll(swarm_stack: SwarmStack) -> None:
    a, b = swarm_stack.urls
    # votes-db may still be starting: until it answers, votes are 503 (and routing goes on).
    wait_until(lambda: httpx.get(f"{a}/api/votes", timeout=5).status_code == 200, timeout=90, interval=0.2)
    zero = {"docker": 0, "helm": 0, "kubernetes": 0, "prometheus": 0}
    voters = [f"voter-{i}" for i in range(100)]
    for url, option in ((a, "docker"), (b, "helm")):  # the same 100 voters, first through a, then b
        with httpx.Client(base_url=url, timeout=10.0) as client:
            for voter in voters:
                response = client.post("/api/vote", json={"option": option}, headers={"X-Voter-Id": voter})
                assert response.status_code == 200, response.text
        expected = {**zero, option: 100}
        assert httpx.get(f"{a}/api/votes").json() == httpx.get(f"{b}/api/votes").json() == expected


def test_votes_db_killed_under_load_keeps_every_acknowledged_vote(swarm_stack: SwarmStack) -> None:
    """docker kill of votes-db under votes and GETs through both instances: votes get 200 or 503 (never a
    500 or a dropped connection), GETs all succeed, and every acknowledged vote is there after the restart."""
    a, b = swarm_stack.urls
    wait_until(lambda: httpx.get(f"{a}/api/votes", timeout=5).status_code == 200, timeout=90, interval=0.2)
    service = f"{swarm_stack.stack}_votes-db"
    old = swarm_stack.task_container(service)
    loads = [VoteLoad(a, workers=2, voters="kill-a"), VoteLoad(b, workers=2, voters="kill-b")]
    pages = [Load(a, workers=1), Load(b, workers=1)]
    with loads[0], loads[1], pages[0], pages[1]:
        wait_until(lambda: all(v.count(200) >= 50 for v in loads), timeout=30)
        old.kill()
        wait_until(lambda: all(v.count(503) >= 5 for v in loads), timeout=60)
        back = [v.count(200) for v in loads]
        wait_until(lambda: all(v.count(200) >= n + 50 for v, n in zip(loads, back, strict=True)), timeout=120)
        for page in pages:
            page.wait_for(50)
    for votes in loads:
        assert votes.errors == [], votes.errors[:3]
        assert set(votes.statuses) == {200, 503}, votes.statuses
    for page in pages:
        assert page.errors == [] and set(page.statuses) == {200}, (page.errors[:3], page.statuses)
    assert swarm_stack.task_container(service).id != old.id  # the engine restarted it
    new = swarm_stack.task_container(service)
    sql = "SELECT voter_id, option FROM votes"
    # The local socket, as the postgres OS user: peer-mapped to the votes' owner (no password needed).
    psql = ["psql", "-h", "/tmp", "-U", "chlb", "-d", "votes", "-At", "-c", sql]
    done = new.exec_run(psql, user="postgres")
    assert done.exit_code == 0, done.output
    stored = dict(line.split("|") for line in done.output.decode().split())
    acked = {**loads[0].acked, **loads[1].acked}
    missing = {voter for voter, option in acked.items() if stored.get(voter) != option}
    assert not missing, f"{len(missing)} acknowledged votes lost, e.g. {sorted(missing)[:5]}"


def test_rm_lets_requests_in_flight_finish_and_the_other_instance_stops_at_once(
    swarm_stack: SwarmStack, docker_engine: Any
) -> None:
    a, b = swarm_stack.urls
    base = [swarm_stack.name(k) for k in (1, 2, 3)]
    victim = swarm_stack.name(5)
    add(a, [victim], swarm_stack.auth)
    wait_until(all_up(swarm_stack, [*base, victim]), timeout=60)
    keys = [k for k in range(400) if route(a, k) == victim][:2]
    assert len(keys) == 2 and all(route(b, k) == victim for k in keys)
    # The engine stops the removed task with SIGTERM and kills it after the service's stop grace period,
    # which the LB sets to at least LB_DRAIN_TIMEOUT (the stack's: 10 s): requests in flight have that long.
    spec = docker_engine.services.get(victim).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["StopGracePeriod"] >= 10 * 10**9

    victim_container = swarm_stack.task_container(victim)

    def slow(url: str, key: int) -> tuple[httpx.Response, float]:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            # POST: never retried on another replica, so only the drain can make it a 200
            response = client.post("/slow", params={"id": str(key), "secs": "5"}, content=b"order")
            return response, time.time()

    def in_flight(url: str) -> int:
        row = (status_of(url) or {}).get(victim)
        return int(row["in_flight"]) if row else -1

    with ThreadPoolExecutor(4) as pool, Load(b, workers=2) as load:
        pending = [pool.submit(slow, url, key) for url in (a, b) for key in keys]
        wait_until(lambda: in_flight(a) == in_flight(b) == 2, timeout=10)
        removed_at = time.time()
        remove(a, [victim], swarm_stack.auth)
        returned = time.monotonic()
        wait_until(lambda: victim not in (replicas_of(b) or [victim]), timeout=CONVERGE_SECONDS)
        assert time.monotonic() - returned <= CONVERGE_SECONDS
        assert not (status_of(b) or {}).get(victim, {}).get("on_ring")  # b sends it nothing new
        assert [route(url, k) != victim for url in (a, b) for k in keys] == [True] * 4
        answers = [future.result() for future in pending]
        load.wait_for(100)
    assert [(r.status_code, r.text) for r, _ in answers] == [(200, "late")] * 4
    # The engine told the replica to stop (SIGTERM) while those requests were still in flight.
    kills = docker_engine.api.events(
        since=int(removed_at) - 1,
        until=int(time.time()) + 1,
        filters={"container": victim_container.id, "event": "kill"},
        decode=True,
    )
    signalled = min(event["timeNano"] / 1e9 for event in kills)
    assert signalled < min(done for _, done in answers), "the replica was stopped only after its requests"
    assert load.errors == [] and set(load.statuses) == {200}, (load.errors[:3], load.statuses)
    wait_until(without(swarm_stack, victim), timeout=30)
    wait_until(converged(swarm_stack, base), timeout=CONVERGE_SECONDS)


def test_add_through_one_instance_is_listed_by_the_other_within_a_second(swarm_stack: SwarmStack) -> None:
    a, b = swarm_stack.urls
    base = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(converged(swarm_stack, base), timeout=30)
    lbs = [f"{swarm_stack.stack}_lb-a", f"{swarm_stack.stack}_lb-b", f"{swarm_stack.stack}_votes-db"]
    assert swarm_stack.services() == sorted([*base, *lbs])  # two instances started together made 3
    added = swarm_stack.name(7)
    add(a, [added], swarm_stack.auth)
    returned = time.monotonic()
    wait_until(lambda: replicas_of(b) == [*base, added], timeout=CONVERGE_SECONDS)
    assert time.monotonic() - returned <= CONVERGE_SECONDS
    assert added in swarm_stack.services()
    remove(b, [added], swarm_stack.auth)  # back to the three the other tests expect
    wait_until(converged(swarm_stack, base), timeout=CONVERGE_SECONDS)


def test_both_instances_route_every_key_to_the_same_replica(swarm_stack: SwarmStack) -> None:
    a, b = swarm_stack.urls
    names = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(all_up(swarm_stack, names), timeout=60)
    through_a = routes(a, range(KEYS))
    through_b = routes(b, range(KEYS))
    assert len(through_a) == len(through_b) == KEYS
    disagree = [k for k in through_a if through_a[k] != through_b[k]]
    assert disagree == [], f"{len(disagree)} of {KEYS} keys disagree, e.g. {disagree[:5]}"
    assert set(through_a.values()) == set(names)


def test_rm_through_either_instance_converges_on_both(swarm_stack: SwarmStack) -> None:
    a, b = swarm_stack.urls
    base = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(converged(swarm_stack, base), timeout=30)
    extra = [swarm_stack.name(8), swarm_stack.name(9)]
    add(b, extra, swarm_stack.auth)
    wait_until(converged(swarm_stack, [*base, *extra]), timeout=CONVERGE_SECONDS)
    for through, gone in ((a, extra[0]), (b, extra[1])):
        remove(through, [gone], swarm_stack.auth)
        returned = time.monotonic()
        left = [n for n in replicas_of(through) or [] if n != gone]
        wait_until(converged(swarm_stack, left), timeout=CONVERGE_SECONDS)
        assert time.monotonic() - returned <= CONVERGE_SECONDS
        wait_until(without(swarm_stack, gone), timeout=10)
    assert replicas_of(a) == replicas_of(b) == base


def test_replica_task_killed_under_load_no_failed_request_and_the_engine_restarts_it(
    swarm_stack: SwarmStack,
) -> None:
    names = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(all_up(swarm_stack, names), timeout=60)
    victim = swarm_stack.name(2)
    old = swarm_stack.task_container(victim)
    old_task = (status_of(swarm_stack.urls[0]) or {})[victim]["task"]["container"]
    assert old.id.startswith(old_task)

    def restarted() -> bool:
        for url in swarm_stack.urls:
            row = (status_of(url) or {}).get(victim)
            if row is None or row["state"] != "up" or not row["on_ring"]:
                return False
            if row["task"] is None or row["task"]["container"] in (None, old_task):
                return False
        return True

    with Load(swarm_stack.urls[0], workers=3) as load_a, Load(swarm_stack.urls[1], workers=3) as load_b:
        load_a.wait_for(200)
        load_b.wait_for(200)
        old.kill()
        wait_until(restarted, timeout=60, interval=0.05)
        load_a.wait_for(200)
        load_b.wait_for(200)
    for load in (load_a, load_b):
        assert load.errors == [], load.errors[:3]
        assert set(load.statuses) == {200}, load.statuses
        assert victim in load.served_by
    new = swarm_stack.task_container(victim)
    assert new.id != old.id
    assert replicas_of(swarm_stack.urls[0]) == replicas_of(swarm_stack.urls[1]) == names
    # The new task answers under the same name, through both instances, for the keys that map to it.
    victim_keys = [k for k in range(300) if route(swarm_stack.urls[0], k) == victim][:20]
    assert victim_keys, "no key of 300 maps to the restarted replica"
    assert all(route(swarm_stack.urls[1], k) == victim for k in victim_keys)


def test_lb_instance_killed_under_load_on_the_other_comes_back_with_the_same_membership(
    swarm_stack: SwarmStack,
) -> None:
    a, b = swarm_stack.urls
    names = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(all_up(swarm_stack, names), timeout=60)
    services_before = swarm_stack.services()
    lb_a = swarm_stack.task_container(f"{swarm_stack.stack}_lb-a")
    with Load(b, workers=3) as load:
        load.wait_for(200)
        lb_a.kill()
        wait_until(lambda: replicas_of(a) is None, timeout=10, interval=0.05)  # really gone
        wait_until(lambda: replicas_of(a) == names, timeout=90, interval=0.1)
        load.wait_for(200)
    assert load.errors == [], load.errors[:3]
    assert set(load.statuses) == {200}, load.statuses
    assert swarm_stack.task_container(f"{swarm_stack.stack}_lb-a").id != lb_a.id
    assert swarm_stack.services() == services_before  # it read the replicas back, made none
    wait_until(all_up(swarm_stack, names), timeout=30)


def test_add_refuses_bad_names_and_never_touches_a_service_it_did_not_make(
    swarm_stack: SwarmStack, docker_engine: Any
) -> None:
    from docker.types import ServiceMode

    a, b = swarm_stack.urls
    auth = swarm_stack.auth
    base = [swarm_stack.name(k) for k in (1, 2, 3)]
    wait_until(converged(swarm_stack, base), timeout=30)
    for bad in ("a.b", "ends-", "Server 5", "x" * 64):
        response = httpx.post(f"{a}/add", json={"n": 1, "hostnames": [bad]}, headers=auth, timeout=10.0)
        assert response.status_code == 400, response.text
        assert response.json()["status"] == "failure"
    foreign = f"t{swarm_stack.token}-foreign"  # someone else's service (no task: zero replicas)
    service = docker_engine.services.create(
        swarm_stack.replica_image, name=foreign, mode=ServiceMode("replicated", 0)
    )
    try:
        response = httpx.post(f"{b}/add", json={"n": 1, "hostnames": [foreign]}, headers=auth, timeout=30.0)
        assert response.status_code == 409, response.text
        assert response.json()["status"] == "failure"
        assert docker_engine.services.get(foreign).id == service.id
    finally:
        service.remove()
    assert replicas_of(a) == replicas_of(b) == base


def test_swarm_runtime_on_the_engine_conflicts_lists_and_reports_task_deaths(
    swarm_stack: SwarmStack, docker_engine: Any
) -> None:
    """Two runtimes of one cluster in this process (the LB side only: no request to the replicas)."""
    import docker
    from docker.types import ServiceMode

    from app.errors import PeerCreatedError, ReplicaExistsError
    from app.runtimes.swarm import SwarmHandle, SwarmRuntime

    cluster = f"{swarm_stack.stack}-rt"  # not the stack's cluster: its LBs must not see these
    name = f"{cluster}-s1"

    def runtime() -> SwarmRuntime:
        return SwarmRuntime(
            docker.from_env,
            image=swarm_stack.replica_image,
            network=swarm_stack.network,
            label=LABEL,
            cluster=cluster,
        )

    def task_container() -> Any:
        running = docker_engine.containers.list(
            sparse=True, filters={"label": f"com.docker.swarm.service.name={name}"}
        )
        return running[0] if running else None

    async def scenario() -> None:
        one, two = runtime(), runtime()
        changes: list[int] = []
        exits: list[SwarmHandle] = []
        two.on_change = lambda: changes.append(1)
        two.on_exit = exits.append
        await two.watch()
        handle = await one.start(name)
        with pytest.raises(PeerCreatedError):
            await two.start(name)
        await eventually(lambda: changes, timeout=5)  # the create reached the other one as an event
        listing = await two.list_replicas()
        assert list(listing) == [name]
        seen, _ = listing[name]
        assert seen.service_id == handle.service_id and seen.host == name
        assert (await two.list_replicas())[name][0] is seen  # one handle per service: identity = instance
        container = await eventually(task_container, timeout=60, interval=0.1)
        view = (await two.list_replicas())[name][1]
        assert view is not None and view.desired_state == "running"
        assert view.container == container.id[:12]
        container.kill()
        await eventually(lambda: exits, timeout=10)  # the task container's die event
        assert exits[0] is seen
        await one.stop(handle)
        assert await two.list_replicas() == {}
        foreign = docker_engine.services.create(
            swarm_stack.replica_image, name=f"{cluster}-x", mode=ServiceMode("replicated", 0)
        )
        try:
            with pytest.raises(ReplicaExistsError) as refused:
                await one.start(f"{cluster}-x")
            assert not isinstance(refused.value, PeerCreatedError)
        finally:
            foreign.remove()
        await one.close()
        await two.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        for service in docker_engine.services.list(filters={"label": f"{LABEL}={cluster}"}):
            service.remove()
        wait_until(
            lambda: not container_names(docker_engine, f"{LABEL}={cluster}"),
            timeout=60,
        )
