"""The voting API and page through TestClient: contract shapes, errors as 4xx failure bodies, identity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.voting.routes import OptionCard
from tests.contract import assert_failure
from tests.vote_app import TestClient, make_app, make_settings

ZERO = {"docker": 0, "helm": 0, "kubernetes": 0, "prometheus": 0}
VALID_OPTIONS = "kubernetes, docker, helm, prometheus"
ID_RULE = "1-128 characters of A-Z a-z 0-9 _ . : -"
NOT_A_STRING = "Invalid request: body.option: Input should be a valid string"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(make_settings(tmp_path))) as client:
        yield client


def get_page(client: TestClient) -> Any:
    """GET /vote; typed Any because `template` and `context` are TestClient extras that httpx's types lack."""
    response: Any = client.get("/vote")
    assert response.status_code == 200
    assert response.template.name == "vote.html"
    return response


def vote(client: TestClient, option: str, voter: str = "alice") -> dict[str, Any]:
    response = client.post("/api/vote", json={"option": option}, headers={"X-Voter-Id": voter})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_vote_answers_the_counts_after_it(client: TestClient) -> None:
    response = client.post("/api/vote", json={"option": "docker"}, headers={"X-Voter-Id": "alice"})
    assert response.status_code == 200
    assert response.json() == {"votes": {**ZERO, "docker": 1}}
    assert list(response.json()["votes"]) == ["docker", "helm", "kubernetes", "prometheus"]


def test_votes_is_a_plain_mapping(client: TestClient) -> None:
    assert client.get("/api/votes").json() == ZERO
    vote(client, "docker", "alice")
    vote(client, "kubernetes", "bob")
    vote(client, "kubernetes", "carol")
    response = client.get("/api/votes")
    assert response.status_code == 200
    assert response.json() == {"docker": 1, "helm": 0, "kubernetes": 2, "prometheus": 0}


def test_a_new_vote_replaces_the_old_one(client: TestClient) -> None:
    vote(client, "docker")
    assert vote(client, "helm") == {"votes": {**ZERO, "helm": 1}}
    assert vote(client, "helm") == {"votes": {**ZERO, "helm": 1}}


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        pytest.param(
            {"content": b'{"option": ', "headers": {"Content-Type": "application/json"}},
            "Invalid request: malformed JSON at line 1 column 12 (Expecting value)",
            id="malformed-json",
        ),
        pytest.param({"json": {"option": 5}}, NOT_A_STRING, id="wrong-type"),
        pytest.param({"json": {"option": None}}, NOT_A_STRING, id="null"),
        pytest.param({"json": {}}, "Invalid request: body.option: Field required", id="missing-option"),
        pytest.param({}, "Invalid request: body: Field required", id="no-body"),
        pytest.param(
            {"json": {"option": ""}},
            "Invalid request: body.option: String should have at least 1 character",
            id="empty-option",
        ),
        pytest.param(
            {"json": {"option": "docker", "weight": 10}},
            "Invalid request: body.weight: Extra inputs are not permitted",
            id="extra-field",
        ),
        pytest.param(
            {"json": ["docker"]},
            "Invalid request: body: Input should be a valid dictionary or object to extract fields from",
            id="not-an-object",
        ),
        pytest.param(
            {"content": b"option=docker", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            "Invalid request: body: Input should be a valid dictionary or object to extract fields from"
            " (send the body as JSON with 'Content-Type: application/json')",
            id="form-encoded",
        ),
        pytest.param(
            {"json": {"option": "emacs"}},
            f"Unknown option 'emacs'; valid options: {VALID_OPTIONS}",
            id="unknown-option",
        ),
        pytest.param(
            {"json": {"option": "Docker"}},
            f"Unknown option 'Docker'; valid options: {VALID_OPTIONS}",
            id="wrong-case",
        ),
    ],
)
def test_bad_bodies_are_400_and_change_nothing(
    client: TestClient, request_kwargs: dict[str, Any], message: str
) -> None:
    headers = {"X-Voter-Id": "alice", **request_kwargs.pop("headers", {})}
    response = client.post("/api/vote", headers=headers, **request_kwargs)
    assert_failure(response, 400, message)
    assert client.get("/api/votes").json() == ZERO


def test_missing_identity_says_how_to_identify(client: TestClient) -> None:
    response = client.post("/api/vote", json={"option": "docker"})
    assert_failure(
        response,
        400,
        f"Missing voter id: send an X-Voter-Id header ({ID_RULE}), "
        "or open /vote in a browser, which sets the voter_id cookie",
    )
    assert client.get("/api/votes").json() == ZERO


@pytest.mark.parametrize("voter", ["", "a b", "x" * 129, "ålice".encode(), "a/b", "a;b"])
def test_bad_voter_id_in_header_is_400(client: TestClient, voter: str | bytes) -> None:
    response = client.post("/api/vote", json={"option": "docker"}, headers={"X-Voter-Id": voter})
    assert_failure(response, 400, f"Invalid voter id in the X-Voter-Id header: use {ID_RULE}")
    assert client.get("/api/votes").json() == ZERO


def test_bad_voter_id_in_cookie_is_400(client: TestClient) -> None:
    client.cookies.set("voter_id", "not valid!")
    response = client.post("/api/vote", json={"option": "docker"})
    assert_failure(response, 400, f"Invalid voter id in the voter_id cookie: use {ID_RULE}")


@pytest.mark.parametrize("voter", ["a", "x" * 128, "Az09_.:-", "550e8400-e29b-41d4-a716-446655440000"])
def test_voter_ids_within_the_rule_are_accepted(client: TestClient, voter: str) -> None:
    assert vote(client, "docker", voter)["votes"]["docker"] == 1


def test_header_wins_over_cookie(client: TestClient) -> None:
    client.cookies.set("voter_id", "browser-1")
    assert client.post("/api/vote", json={"option": "docker"}).json() == {"votes": {**ZERO, "docker": 1}}
    # Same client, but the header names another voter: a second vote, the cookie's stays.
    response = client.post("/api/vote", json={"option": "helm"}, headers={"X-Voter-Id": "script-7"})
    assert response.json() == {"votes": {**ZERO, "docker": 1, "helm": 1}}
    # The header naming the cookie's voter changes that voter's vote: one identity space.
    response = client.post("/api/vote", json={"option": "helm"}, headers={"X-Voter-Id": "browser-1"})
    assert response.json() == {"votes": {**ZERO, "helm": 2}}


def test_an_invalid_header_does_not_fall_back_to_the_cookie(client: TestClient) -> None:
    client.cookies.set("voter_id", "browser-1")
    response = client.post("/api/vote", json={"option": "docker"}, headers={"X-Voter-Id": "no spaces"})
    assert response.status_code == 400
    assert client.get("/api/votes").json() == ZERO


def test_votes_etag_gives_304_until_a_count_changes(client: TestClient) -> None:
    first = client.get("/api/votes")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"
    unchanged = client.get("/api/votes", headers={"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content, unchanged.headers["ETag"]) == (304, b"", etag)
    vote(client, "docker")
    changed = client.get("/api/votes", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json() == {**ZERO, "docker": 1}
    assert changed.headers["ETag"] != etag
    vote(client, "docker")  # the same vote again: nothing changed, so still the same tag
    assert client.get("/api/votes", headers={"If-None-Match": changed.headers["ETag"]}).status_code == 304


def test_page_gives_a_new_browser_a_voter_cookie(client: TestClient) -> None:
    response = get_page(client)
    assert response.context["choice"] is None
    assert response.context["total"] == 0
    assert response.headers["Cache-Control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("voter_id=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=31536000" in cookie
    assert len(client.cookies["voter_id"]) >= 16


def test_page_shows_counts_and_the_voters_choice(client: TestClient) -> None:
    client.get("/vote")  # the cookie jar now holds this browser's voter id
    assert client.post("/api/vote", json={"option": "docker"}).status_code == 200
    vote(client, "docker", "bob")
    vote(client, "helm", "carol")
    vote(client, "prometheus", "dave")

    response = get_page(client)
    assert "set-cookie" not in response.headers  # the browser keeps its id
    context = response.context
    assert context["choice"] == "docker"
    assert context["total"] == 4
    assert context["poll_interval_ms"] == 1000
    assert context["options"] == [
        OptionCard("kubernetes", "Kubernetes", "logos/kubernetes.svg", 0, 0),
        OptionCard("docker", "Docker", "logos/docker.svg", 2, 50),
        OptionCard("helm", "Helm", "logos/helm.svg", 1, 25),
        OptionCard("prometheus", "Prometheus", "logos/prometheus.svg", 1, 25),
    ]


def test_page_logos_and_scripts_are_served(client: TestClient) -> None:
    cards: list[OptionCard] = get_page(client).context["options"]
    for path in [*(card.logo for card in cards), "logos/generic.svg", "vote.css", "vote.js"]:
        response = client.get(f"/static/{path}")
        assert response.status_code == 200, path
        assert response.content


def test_unknown_configured_option_gets_a_generic_card(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.vote_options = ["docker", "argo-cd"]
    with TestClient(make_app(settings)) as client:
        cards = get_page(client).context["options"]
        assert cards == [
            OptionCard("docker", "Docker", "logos/docker.svg", 0, 0),
            OptionCard("argo-cd", "Argo Cd", "logos/generic.svg", 0, 0),
        ]
        assert client.get("/api/votes").json() == {"argo-cd": 0, "docker": 0}


def test_openapi_documents_both_identities(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/api/vote"]["post"]
    params = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert params == {("header", "x-voter-id"), ("cookie", "voter_id")}
    assert "X-Voter-Id" in operation["description"] and "voter_id" in operation["description"]
    assert "400" in operation["responses"]
