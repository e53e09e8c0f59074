"""The retry rules through a real LB and real replicas: a request that may have been processed is never
sent to a second replica; one that cannot have been is retried there."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import echo_command
from tests.contract import assert_failure
from tests.lb_support import RunningLB, start_lb, wait_until


@pytest.fixture(scope="module", params=["1", "2"], ids=["one-process", "workers2"])
def echo_lb(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[RunningLB]:
    workdir = tmp_path_factory.mktemp("retries")
    running = start_lb(workdir, replicas="3", replica_command=echo_command(), workers=request.param)
    yield running
    running.stop()


def pids(lb: RunningLB) -> dict[str, int]:
    return {name: row["pid"] for name, row in lb.status().items()}


def all_up(lb: RunningLB) -> bool:
    return all(row["state"] == "up" for row in lb.status().values())


def test_a_post_whose_replica_reads_it_and_dies_gets_502_and_reaches_no_other(echo_lb: RunningLB) -> None:
    # /crash: the replica reads the request and exits without a byte of answer. Every echo replica has
    # /crash: had the POST gone on to the next replica, that one would have died too, and the answer
    # would name it (or be the 503 of every replica failing), not the first.
    wait_until(lambda: all_up(echo_lb), timeout=30)
    name = echo_lb.serving("post-crash")  # a keep-alive connection to it is now idle in the LB
    response = echo_lb.client.post("/crash", params={"id": "post-crash"}, content=b"vote")
    assert_failure(response, 502, f"Replica '{name}' closed the connection mid-request")
    wait_until(lambda: all_up(echo_lb), timeout=30)


def test_a_get_whose_replica_dies_goes_to_the_next_one(echo_lb: RunningLB) -> None:
    # A GET is safe to repeat: it goes on clockwise, and each echo replica it reaches dies of /crash,
    # until LB_MAX_TRIES (3, every replica here) were tried.
    wait_until(lambda: all_up(echo_lb), timeout=30)
    before = pids(echo_lb)
    response = echo_lb.client.get("/crash", params={"id": "get-crash"})
    assert_failure(response, 503, "No replica could answer the request")
    wait_until(lambda: all_up(echo_lb), timeout=30)
    after = pids(echo_lb)
    assert all(after[n] != before[n] for n in before)
