"""LB_ADMIN_TOKEN: mutations need the bearer token, read-only routes stay public, the token is not logged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.lb_support import RunningLB, start_lb

TOKEN = "s3cret-token-for-tests"
UNAUTHORIZED = "<Error> Missing or invalid admin token: send 'Authorization: Bearer <LB_ADMIN_TOKEN>'"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    """One LB with an admin token and one replica."""
    running = start_lb(tmp_path_factory.mktemp("guarded"), replicas="1", admin_token=TOKEN)
    yield running
    running.stop()


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"message": UNAUTHORIZED, "status": "failure"}
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "other-scheme", "no-scheme"],
)
def test_mutations_without_the_right_token_get_401_and_change_nothing(
    guarded: RunningLB, headers: dict[str, str]
) -> None:
    before = guarded.replicas()
    assert_unauthorized(guarded.client.post("/add", json={"n": 1, "hostnames": ["T9"]}, headers=headers))
    assert_unauthorized(
        guarded.client.request("DELETE", "/rm", json={"n": 1, "hostnames": before}, headers=headers)
    )
    assert guarded.replicas() == before


def test_a_prefix_of_the_token_is_not_enough(guarded: RunningLB) -> None:
    response = guarded.client.post("/add", json={"n": 1}, headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
    assert_unauthorized(response)


def test_mutations_with_the_right_token_succeed(guarded: RunningLB) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    added = guarded.client.post("/add", json={"n": 1, "hostnames": ["T9"]}, headers=auth)
    assert added.status_code == 200, added.text
    assert "T9" in added.json()["message"]["replicas"]
    removed = guarded.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["T9"]}, headers=auth)
    assert removed.status_code == 200, removed.text
    assert "T9" not in removed.json()["message"]["replicas"]


@pytest.mark.parametrize("path", ["/rep", "/status", "/metrics", "/healthz", "/ring", "/openapi.json"])
def test_read_only_routes_need_no_token(guarded: RunningLB, path: str) -> None:
    assert guarded.client.get(path).status_code == 200


def test_route_plan_and_proxied_paths_need_no_token(guarded: RunningLB) -> None:
    assert guarded.client.get("/route", params={"key": "42"}).status_code == 200
    assert guarded.client.post("/ring/plan", json={"add": ["T7"]}).status_code == 200
    assert guarded.client.get("/home", params={"id": "42"}).status_code == 200


def test_the_token_never_reaches_the_log(guarded: RunningLB) -> None:
    guarded.client.post("/add", json={"n": 1}, headers={"Authorization": "Bearer wrong"})
    assert TOKEN not in guarded.log()


def test_openapi_declares_the_bearer_scheme_on_mutations_only(guarded: RunningLB) -> None:
    schema = guarded.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["AdminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of LB_ADMIN_TOKEN (only needed when the LB was started with one).",
    }
    paths = schema["paths"]
    assert paths["/add"]["post"]["security"] == [{"AdminToken": []}]
    assert paths["/rm"]["delete"]["security"] == [{"AdminToken": []}]
    assert "security" not in paths["/rep"]["get"]
    assert "401" in paths["/add"]["post"]["responses"]


def test_without_a_token_mutations_are_open(tmp_path: Path) -> None:
    lb = start_lb(tmp_path, replicas="1", admin_token="")  # empty counts as unset
    try:
        response = lb.client.post("/add", json={"n": 1, "hostnames": ["T9"]})
        assert response.status_code == 200, response.text
    finally:
        lb.stop()
