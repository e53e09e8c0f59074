"""Request metrics: counters move as requests pass, the histogram has a replica label, /status shows them."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import echo_command
from tests.lb_support import RunningLB, start_lb, wait_until


@pytest.fixture(scope="module")
def echo_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    running = start_lb(tmp_path_factory.mktemp("metrics"), replicas="3", replica_command=echo_command())
    yield running
    running.stop()


def samples(lb: RunningLB) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = lb.client.get("/metrics")
    assert response.status_code == 200
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def test_request_counters_and_histogram_move_per_replica(echo_lb: RunningLB) -> None:
    before = samples(echo_lb)
    served: dict[str, int] = {}
    for k in range(60):
        name = echo_lb.serving(f"m{k}")
        served[name] = served.get(name, 0) + 1
    after = samples(echo_lb)
    for name, count in served.items():
        moved = total(after, "chlb_requests_total", replica=name, **{"class": "2xx"}) - total(
            before, "chlb_requests_total", replica=name, **{"class": "2xx"}
        )
        assert moved == count
        hist = total(after, "chlb_upstream_latency_seconds_count", replica=name) - total(
            before, "chlb_upstream_latency_seconds_count", replica=name
        )
        assert hist == count
        assert total(after, "chlb_upstream_latency_seconds_bucket", replica=name, le="+Inf") == total(
            after, "chlb_upstream_latency_seconds_count", replica=name
        )
        assert total(after, "chlb_upstream_latency_seconds_sum", replica=name) > 0


def test_status_rows_show_requests_and_p99(echo_lb: RunningLB) -> None:
    name = echo_lb.serving("p99-key")
    row = echo_lb.status()[name]
    assert row["requests"] >= 1 and row["in_flight"] == 0
    assert row["latency_p99_ms"] is not None and 0 < row["latency_p99_ms"] < 10_000


def test_status_classes_and_the_lbs_own_errors_are_counted(echo_lb: RunningLB) -> None:
    before = samples(echo_lb)
    assert echo_lb.client.get("/status/503", params={"id": "c1"}).status_code == 503
    assert echo_lb.client.get("/nowhere", params={"id": "c1"}).status_code == 400  # replica 404 -> LB 400
    assert echo_lb.client.post("/add", json={"n": 0}).status_code == 400  # a control route's own error
    after = samples(echo_lb)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert delta("chlb_requests_total", **{"class": "5xx"}) == 1
    assert delta("chlb_requests_total", **{"class": "4xx"}) == 1
    assert delta("chlb_lb_responses_total", code="400") == 2


def test_in_flight_is_visible_while_a_request_is_on_the_replica(echo_lb: RunningLB) -> None:
    name = echo_lb.serving("slow-key")
    result: list[int] = []

    def slow() -> None:
        with httpx.Client(base_url=echo_lb.url, timeout=10.0) as client:
            result.append(client.get("/slow", params={"secs": "1", "id": "slow-key"}).status_code)

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        wait_until(lambda: echo_lb.status()[name]["in_flight"] == 1, timeout=5)
        assert total(samples(echo_lb), "chlb_in_flight", replica=name) == 1
    finally:
        thread.join(10)
    assert result == [200]
    assert echo_lb.status()[name]["in_flight"] == 0


def test_a_request_retried_after_its_replica_died_is_counted(echo_lb: RunningLB) -> None:
    name = echo_lb.serving("crash-key")
    before = samples(echo_lb)
    response = echo_lb.client.get("/crash", params={"id": "crash-key"})
    assert response.status_code in (400, 503), response.text  # each replica tried dies of /crash too
    after = samples(echo_lb)
    assert (
        total(after, "chlb_upstream_retries_total", replica=name)
        - total(before, "chlb_upstream_retries_total", replica=name)
        == 1
    )
    assert total(after, "chlb_requests_total", replica=name, **{"class": "error"}) > total(
        before, "chlb_requests_total", replica=name, **{"class": "error"}
    )
    wait_until(lambda: echo_lb.status()[name]["state"] == "up", timeout=30)  # replaced, for later tests


def test_ring_rebuilds_are_counted(echo_lb: RunningLB) -> None:
    before = total(samples(echo_lb), "chlb_ring_rebuilds_total")
    assert before >= 1  # the initial replicas came up
    assert echo_lb.client.post("/add", json={"n": 1, "hostnames": ["R9"]}).status_code == 200
    assert echo_lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["R9"]}).status_code == 200
    assert total(samples(echo_lb), "chlb_ring_rebuilds_total") >= before + 2


def test_lifecycle_transitions_are_counted(echo_lb: RunningLB) -> None:
    metrics = samples(echo_lb)
    assert total(metrics, "chlb_health_transitions_total", replica="Server 1", state="up") >= 1  # booted
    assert echo_lb.client.post("/add", json={"n": 1, "hostnames": ["T7"]}).status_code == 200
    assert echo_lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["T7"]}).status_code == 200
    wait_until(
        lambda: total(samples(echo_lb), "chlb_health_transitions_total", replica="T7", state="removed")
    )
    assert total(samples(echo_lb), "chlb_health_transitions_total", replica="T7", state="up") == 1
