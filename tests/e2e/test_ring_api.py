"""Ring introspection: /ring, /route and /ring/plan agree with what the proxy really does."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.ring.introspect import SAMPLE_SIZE, sample_keys
from tests.lb_support import RunningLB, start_lb


def served_by(lb: RunningLB, keys: Sequence[str], workers: int = 8) -> dict[str, str]:
    """The replica that answers GET /home for each key, through the proxy (a few client threads)."""

    def run(chunk: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with httpx.Client(base_url=lb.url, timeout=10.0) as client:
            for key in chunk:
                response = client.get("/home", params={"id": key})
                assert response.status_code == 200, response.text
                out[key] = response.json()["message"].split(":")[-1].strip()
        return out

    chunks = [keys[i::workers] for i in range(workers)]
    result: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(run, chunks):
            result.update(part)
    return result


@pytest.fixture(scope="module", params=["rendezvous", "ketama"])
def ring_lb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    running = start_lb(tmp_path_factory.mktemp("ring"), replicas="3", strategy=request.param)
    yield running
    running.stop()


# ----- over HTTP ------------------------------------------------------------------------------------


def test_route_agrees_with_the_proxy_for_1000_keys(ring_lb: RunningLB) -> None:
    keys = list(sample_keys()[:1000])
    proxied = served_by(ring_lb, keys)
    members = ring_lb.replicas()
    for key in keys:
        body = ring_lb.client.get("/route", params={"key": key}).json()
        assert body["status"] == "successful" and body["key"] == key
        assert body["replica"] == proxied[key], key
        assert sorted([body["replica"], *body["fallbacks"]]) == sorted(members)


def test_ring_shows_members_shares_and_points(ring_lb: RunningLB) -> None:
    body = ring_lb.client.get("/ring").json()
    assert body["status"] == "successful" and body["sample_size"] == SAMPLE_SIZE
    assert [m["name"] for m in body["members"]] == ring_lb.replicas()
    assert sum(m["share"] for m in body["members"]) == pytest.approx(1.0)
    assert all(0.25 < m["share"] < 0.42 for m in body["members"])
    points = body["points"]
    if body["strategy"] == "ketama":
        assert len(points) == 3 * 160 and {p["replica"] for p in points} == set(ring_lb.replicas())
    else:
        assert points == []


@pytest.mark.slow
def test_plan_of_an_add_matches_the_keys_that_really_move(tmp_path: Path) -> None:
    lb = start_lb(tmp_path, replicas="3")
    try:
        keys = list(sample_keys())
        answer = lb.client.post("/ring/plan", json={"add": ["S9"]})
        assert answer.status_code == 200, answer.text
        planned = answer.json()
        assert lb.replicas() == planned["before"]  # nothing changed
        before = served_by(lb, keys)
        assert lb.client.post("/add", json={"n": 1, "hostnames": ["S9"]}).status_code == 200
        after = served_by(lb, keys)
        flows = Counter((before[k], after[k]) for k in keys if before[k] != after[k])
        assert planned["moved"] == sum(flows.values())
        assert planned["moved_share"] == planned["moved"] / SAMPLE_SIZE
        assert {(f["from"], f["to"]): f["keys"] for f in planned["flows"]} == dict(flows)
        assert planned["after"] == lb.replicas()
    finally:
        lb.stop()


def test_route_and_plan_errors_use_the_failure_body(ring_lb: RunningLB) -> None:
    members = ring_lb.replicas()
    cases = [
        (ring_lb.client.get("/route"), 400),
        (ring_lb.client.get("/route", params={"key": ""}), 400),
        (ring_lb.client.post("/ring/plan", json={"remove": ["nope"]}), 400),
        (ring_lb.client.post("/ring/plan", json={"add": [members[0]]}), 409),
        (ring_lb.client.post("/ring/plan", json={"add": ["x"], "remove": ["x"]}), 400),
        (ring_lb.client.post("/ring/plan", json={"add": "S9"}), 400),
        (ring_lb.client.post("/ring/plan", json={"bogus": []}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["status"] == "failure" and body["message"].startswith("<Error> ")
    # A name in use: the plan answers as /add would (409, the same message).
    taken = {"add": [members[0]]}
    planned = ring_lb.client.post("/ring/plan", json=taken)
    added = ring_lb.client.post("/add", json={"n": 1, "hostnames": [members[0]]})
    assert (planned.status_code, planned.json()) == (added.status_code, added.json()) == (409, planned.json())


def test_an_empty_plan_moves_nothing(ring_lb: RunningLB) -> None:
    body = ring_lb.client.post("/ring/plan", json={}).json()
    assert body["moved"] == 0 and body["flows"] == [] and body["before"] == body["after"]


def test_route_without_replicas_is_503(tmp_path: Path) -> None:
    lb = start_lb(tmp_path, replicas="0")
    try:
        response = lb.client.get("/route", params={"key": "42"})
        assert response.status_code == 503, response.text
        assert response.json()["status"] == "failure"
        ring = lb.client.get("/ring").json()
        assert ring["members"] == [] and ring["points"] == []
        planned = lb.client.post("/ring/plan", json={"add": ["S1"]}).json()
        assert planned["moved"] == SAMPLE_SIZE and planned["flows"] == [
            {"from": None, "to": "S1", "keys": SAMPLE_SIZE}
        ]
    finally:
        lb.stop()
