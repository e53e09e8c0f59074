"""Every row of the HTTP contract (docs/contract.md) against the real LB and real replica processes,
served by one process and by two (LB_WORKERS=2: every check on a new connection, so both answer)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from tests.conftest import echo_command
from tests.contract import assert_failure
from tests.lb_support import LBFactory, RunningLB
from tests.runtimes import RuntimeUnderTest, natural

ADD_TOO_MANY = "Length of hostname list is more than newly added instances"
RM_TOO_MANY = "Length of hostname list is more than removable instances"


@pytest.fixture(scope="module", params=["1", "2"], ids=lambda w: f"workers{w}")
def workers(request: pytest.FixtureRequest) -> str:
    """LB_WORKERS for this module's LBs (overrides the conftest's "1")."""
    count: str = request.param
    return count


def membership(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "successful"
    names: list[str] = body["message"]["replicas"]
    assert body["message"]["N"] == len(names)
    return names


# ----- read-only rows on a shared LB, once per runtime ---------------------------------------------


def test_rep_lists_the_three_default_replicas(lb: RunningLB) -> None:
    response = lb.client.get("/rep")
    assert response.json() == {
        "message": {"N": 3, "replicas": lb.runtime.gen(1, 2, 3)},
        "status": "successful",
    }


def test_home_is_answered_by_a_member_in_the_contract_shape(lb: RunningLB) -> None:
    response = lb.client.get("/home")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "status"} and body["status"] == "successful"
    assert body["message"].startswith("Hello from Server: ")
    assert body["message"].split(":")[-1].strip() in lb.replicas()


def test_same_key_reaches_the_same_replica(lb: RunningLB) -> None:
    for key in ("123456", "42", "abc"):
        assert len({lb.serving(key) for _ in range(20)}) == 1


def test_keys_spread_over_every_replica(lb: RunningLB) -> None:
    seen = Counter(lb.serving(str(100_000 + k)) for k in range(300))
    assert set(seen) == set(lb.replicas())
    assert max(seen.values()) < 0.5 * 300


def test_requests_without_key_get_random_ids_and_spread(lb: RunningLB) -> None:
    seen = {lb.client.get("/home").json()["message"] for _ in range(60)}
    assert len(seen) >= 2


def test_unknown_path_is_400_with_the_contract_message(lb: RunningLB) -> None:
    response = lb.client.get("/other")
    assert_failure(response, 400, "'/other' endpoint does not exist in server replicas")


def test_heartbeat_of_a_replica_is_proxied(lb: RunningLB) -> None:
    response = lb.client.get("/heartbeat")
    assert response.status_code == 200 and response.content == b""


def test_reserved_paths_are_served_by_the_lb(lb: RunningLB) -> None:
    assert lb.client.get("/docs").status_code == 200
    spec = lb.client.get("/openapi.json").json()
    for path in ("/add", "/rm", "/rep", "/status", "/{path}"):
        assert path in spec["paths"], path
    assert lb.client.get("/healthz").json() == {"status": "successful"}
    metrics = lb.client.get("/metrics").text
    assert "chlb_replicas_desired 3.0" in metrics
    assert f'chlb_replica_up{{replica="{lb.runtime.gen(1)[0]}"}} 1.0' in metrics
    assert_failure(lb.client.get("/add"), 405)
    assert_failure(lb.client.post("/rep"), 405)


# Names in these bodies: "@1" stands for the first generated name, "+S5" for a user name on this runtime.
INVALID = [
    ("POST", "/add", {"n": 1, "hostnames": ["+S5", "+S4"]}, 400, ADD_TOO_MANY),
    ("DELETE", "/rm", {"n": 1, "hostnames": ["@1", "@2"]}, 400, RM_TOO_MANY),
    ("POST", "/add", {"n": 0}, 400, None),
    ("POST", "/add", {"n": -3, "hostnames": []}, 400, None),
    ("POST", "/add", {"n": "two"}, 400, None),
    ("POST", "/add", {"hostnames": ["+S5"]}, 400, None),
    ("POST", "/add", {"n": 1, "hostnames": "S5"}, 400, None),
    ("POST", "/add", {"n": 1, "hostnames": ["@1"]}, 409, None),
    ("POST", "/add", {"n": 2, "hostnames": ["+S9", "+S9"]}, 400, None),
    ("POST", "/add", {"n": 1, "hostnames": [""]}, 400, None),
    ("POST", "/add", {"n": 1, "hostnames": ["x" * 65]}, 400, None),
    ("POST", "/add", {"n": 100_000}, 400, None),
    ("POST", "/add", [1, 2], 400, None),
    ("DELETE", "/rm", {"n": 0}, 400, None),
    ("DELETE", "/rm", {"n": 1, "hostnames": ["nope"]}, 400, None),
    ("DELETE", "/rm", {"n": 2, "hostnames": ["@1", "@1"]}, 400, None),
    ("DELETE", "/rm", {}, 400, None),
]


def resolve_names(body: Any, lb: RunningLB) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("hostnames"), list):
        return body
    names = [
        lb.runtime.gen(int(h[1:]))[0]
        if h.startswith("@")
        else lb.runtime.host(h[1:])
        if h.startswith("+")
        else h
        for h in body["hostnames"]
    ]
    return {**body, "hostnames": names}


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), INVALID)
def test_invalid_membership_requests_change_nothing(
    lb: RunningLB, method: str, path: str, body: Any, status: int, message: str | None
) -> None:
    before = lb.replicas()
    assert_failure(lb.client.request(method, path, json=resolve_names(body, lb)), status, message)
    assert lb.replicas() == before


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"null", b'{"n": 1, "extra": true}'])
def test_malformed_bodies_are_400(lb: RunningLB, raw: bytes) -> None:
    for method, path in (("POST", "/add"), ("DELETE", "/rm")):
        response = lb.client.request(method, path, content=raw, headers={"content-type": "application/json"})
        assert_failure(response, 400)
    assert lb.replicas() == lb.runtime.gen(1, 2, 3)


# ----- membership changes on their own LB, once per runtime -------------------------------------------


def test_add_and_remove_follow_the_contract(
    lb_factory: LBFactory, runtime: RuntimeUnderTest, workers: str
) -> None:
    rt = runtime.fresh()
    lb = lb_factory(workers=workers, **rt.settings)
    s4, s5 = rt.host("S4"), rt.host("S5")
    names = membership(lb.client.post("/add", json={"n": 2, "hostnames": [s5, s4]}))
    assert names == natural([s4, s5, *rt.gen(1, 2, 3)])
    # the new replicas serve at once: some key reaches S5
    assert s5 in {lb.serving(str(k)) for k in range(200)}
    # names beyond the given ones are generated, unique, and fill the smallest free number
    assert membership(lb.client.post("/add", json={"n": 1})) == natural([s4, s5, *rt.gen(1, 2, 3, 4)])
    # rm: given names first, then the newest
    removed = membership(lb.client.request("DELETE", "/rm", json={"n": 2, "hostnames": [s5]}))
    assert removed == natural([s4, *rt.gen(1, 2, 3)])
    assert membership(lb.client.request("DELETE", "/rm", json={"n": 1})) == rt.gen(1, 2, 3)
    # hostnames may be absent on /add too
    assert membership(lb.client.post("/add", json={"n": 1})) == rt.gen(1, 2, 3, 4)


def test_clearing_the_pool_then_503_then_names_are_reusable(
    lb_factory: LBFactory, runtime: RuntimeUnderTest, workers: str
) -> None:
    rt = runtime.fresh()
    lb = lb_factory(replicas="2", workers=workers, **rt.settings)
    assert membership(lb.client.request("DELETE", "/rm", json={"n": 10, "hostnames": []})) == []
    body = assert_failure(lb.client.get("/home"), 503)
    assert "replica" in body["message"].lower()
    names = [rt.host(f"server{k}") for k in (1, 2, 3)]
    assert membership(lb.client.post("/add", json={"n": 3, "hostnames": names})) == names
    assert {lb.serving(str(k)) for k in range(100)} == set(names)
    rm = {"n": 1, "hostnames": [names[1]]}
    assert membership(lb.client.request("DELETE", "/rm", json=rm)) == [names[0], names[2]]
    assert membership(lb.client.post("/add", json={"n": 1, "hostnames": [names[1]]})) == names


def test_removing_a_replica_moves_only_its_keys(
    lb_factory: LBFactory, runtime: RuntimeUnderTest, workers: str
) -> None:
    rt = runtime.fresh()
    lb = lb_factory(replicas="4", workers=workers, **rt.settings)
    victim = rt.gen(2)[0]
    keys = [str(k) for k in range(200)]
    before = {k: lb.serving(k) for k in keys}
    membership(lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": [victim]}))
    after = {k: lb.serving(k) for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == victim}
    membership(lb.client.post("/add", json={"n": 1, "hostnames": [victim]}))
    assert {k: lb.serving(k) for k in keys} == before


def test_a_replica_that_cannot_start_fails_the_add_and_changes_nothing(
    lb_factory: LBFactory, workers: str
) -> None:
    lb = lb_factory(replicas="0", replica_command=["/bin/false", "{fd}"], start_timeout="3", workers=workers)
    body = assert_failure(lb.client.post("/add", json={"n": 2, "hostnames": ["A"]}), 502)
    assert "nothing was changed" in body["message"]
    assert lb.replicas() == []


# ----- pass-through (echo replicas) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_lb(tmp_path_factory: pytest.TempPathFactory, workers: str) -> Any:
    from tests.lb_support import start_lb

    workdir = tmp_path_factory.mktemp("echo")
    running = start_lb(workdir, replica_command=echo_command(), read_timeout="1", workers=workers)
    yield running
    running.stop()


def test_method_query_headers_and_body_pass_through(echo_lb: RunningLB) -> None:
    response = echo_lb.client.post(
        "/echo/a%20b/c?id=7&x=1&x=2",
        content=b'{"k": 1}',
        headers={"X-Custom": "yes", "Content-Type": "text/x"},
    )
    assert response.status_code == 200
    assert response.headers["x-replica"] == response.json()["server"]
    echo = response.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo/a b/c"
    assert echo["query"] == "id=7&x=1&x=2"
    assert echo["body"] == '{"k": 1}'
    headers = {k: v for k, v in echo["headers"]}
    assert headers["x-custom"] == "yes" and headers["content-type"] == "text/x"
    assert headers["content-length"] == "8"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "connection" not in headers or headers["connection"] != "close"


def test_every_method_is_proxied(echo_lb: RunningLB) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = echo_lb.client.request(method, "/echo/m?id=1", content=b"x" if method != "GET" else None)
        assert response.status_code == 200 and response.json()["method"] == method
    head = echo_lb.client.head("/echo/h?id=1")
    assert head.status_code == 200 and head.content == b""


def test_status_codes_and_chunked_bodies_come_back_unchanged(echo_lb: RunningLB) -> None:
    for code in (201, 302, 418, 500, 503):
        response = echo_lb.client.get(f"/status/{code}?id=3")
        assert response.status_code == code and response.content == b"as asked"
    chunked = echo_lb.client.get("/chunked?id=3")
    assert chunked.status_code == 200 and chunked.content == b"one,two,three"


def test_hop_by_hop_headers_are_not_forwarded(echo_lb: RunningLB) -> None:
    response = echo_lb.client.get(
        "/echo/h?id=1", headers={"Connection": "keep-alive, X-Secret", "X-Secret": "s", "Keep-Alive": "5"}
    )
    names = {k for k, _ in response.json()["headers"]}
    assert "x-secret" not in names and "keep-alive" not in names


def test_slow_replica_gives_504(echo_lb: RunningLB) -> None:
    response = echo_lb.client.get("/slow?secs=3&id=5")
    assert_failure(response, 504)
    assert echo_lb.client.get("/home?id=5").status_code == 200


def test_oversized_body_is_413(lb_factory: LBFactory, workers: str) -> None:
    lb = lb_factory(replicas="1", max_body_bytes="1000", workers=workers)
    assert_failure(lb.client.post("/home", content=b"x" * 2000), 413)
