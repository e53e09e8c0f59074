"""Graceful drain: /rm takes a replica off the ring at once and lets its requests in flight finish."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import echo_command
from tests.e2e.test_workers import worker_row
from tests.lb_support import LBFactory, alive, replica_pids, wait_until


def test_requests_in_flight_on_a_removed_replica_complete(lb_factory: LBFactory) -> None:
    # Replicas that cut their requests the moment they are told to stop (as `docker rm -f` does):
    # only the LB's drain can save the requests in flight.
    abrupt = [*echo_command(), "--grace", "0"]
    lb = lb_factory(replicas="3", replica_command=abrupt, drain_timeout="10")
    victim = "Server 2"
    keys = [k for k in (str(i) for i in range(300)) if lb.serving(k) == victim][:4]
    pid = replica_pids(lb)[victim]

    def slow(key: str) -> httpx.Response:
        with httpx.Client(base_url=lb.url, timeout=10) as client:
            # POST: a request that may have been processed is never retried elsewhere
            return client.post("/slow", params={"id": key, "secs": "1"}, content=b"order")

    with ThreadPoolExecutor(len(keys)) as pool:
        pending = [pool.submit(slow, key) for key in keys]
        wait_until(lambda: lb.status()[victim]["in_flight"] == len(keys))  # all on their way
        response = lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": [victim]})
        assert response.status_code == 200 and victim not in response.json()["message"]["replicas"]
        assert lb.status()[victim]["state"] == "draining"  # still finishing, no longer a member
        assert lb.serving(keys[0]) != victim  # new requests for its keys go elsewhere at once
        answers = [future.result() for future in pending]
    assert [(r.status_code, r.text) for r in answers] == [(200, "late")] * len(keys)
    wait_until(lambda: victim not in lb.status() and not alive(pid), timeout=10)
    assert "event=draining" in lb.log() and f'event=removed replica="{victim}"' in lb.log()


def test_with_workers_the_drain_waits_for_requests_in_every_process(lb_factory: LBFactory) -> None:
    # Each slow request comes on a new connection, so the kernel spreads them over the owner and the
    # worker; the owner sees only its own in flight: the replica must outlive the worker's as well.
    abrupt = [*echo_command(), "--grace", "0"]
    lb = lb_factory(
        replicas="3", workers="2", replica_command=abrupt, drain_timeout="10", worker_stats_interval="0.2"
    )
    victim = "Server 2"
    keys = [k for k in (str(i) for i in range(400)) if lb.serving(k) == victim][:12]
    replica = f"http://{lb.status()[victim]['address']}"
    pid = replica_pids(lb)[victim]

    def slow(key: str) -> httpx.Response:
        with httpx.Client(base_url=lb.url, timeout=15) as client:  # a connection of its own
            return client.post("/slow", params={"id": key, "secs": "1.5"}, content=b"order")

    with ThreadPoolExecutor(len(keys)) as pool:
        pending = [pool.submit(slow, key) for key in keys]
        wait_until(lambda: httpx.get(f"{replica}/slow-count").text == str(len(keys)))  # all arrived
        # /status counts every process's (the worker's as it last reported, every 0.2 s here)
        wait_until(lambda: lb.status()[victim]["in_flight"] == len(keys))
        response = lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": [victim]})
        assert response.status_code == 200 and victim not in response.json()["message"]["replicas"]
        answers = [future.result() for future in pending]
    assert [(r.status_code, r.text) for r in answers] == [(200, "late")] * len(keys)
    wait_until(lambda: victim not in lb.status() and not alive(pid), timeout=10)
    # The worker really carried some of them (its counters reach the owner every 0.2 s).
    wait_until(lambda: worker_row(lb)["requests"] >= 1, timeout=10)
