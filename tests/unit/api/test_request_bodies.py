"""Request bodies of the LB's own API: strict JSON types, and malformed JSON said in lines and columns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.api.error_handlers import where_json_broke
from tests.vote_app import TestClient, make_app, make_settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(make_settings(tmp_path))) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param("POST", "/add", {"n": "2"}, "n", id="add-n-as-string"),
        pytest.param("POST", "/add", {"n": True}, "n", id="add-n-as-boolean"),
        pytest.param("POST", "/add", {"n": 2.0}, "n", id="add-n-as-float"),
        pytest.param("DELETE", "/rm", {"n": "1"}, "n", id="rm-n-as-string"),
        pytest.param("POST", "/add", {"n": 1, "hostnames": "S5"}, "hostnames", id="add-hostnames-as-string"),
        pytest.param("POST", "/ring/plan", {"add": [5]}, "add.0", id="plan-name-as-number"),
        pytest.param("POST", "/api/vote", {"option": 5}, "option", id="vote-option-as-number"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_400_not_coerced(
    client: TestClient, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = client.request(method, path, json=body, headers={"X-Voter-Id": "alice-0001"})
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert message.startswith(f"<Error> Invalid request: body.{field}: "), message
    assert client.get("/rep").json()["message"]["N"] == 0  # nothing was added or removed


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param(b'{"n": ', "line 1 column 7", id="cut-short"),
        pytest.param(b'{\n  "n": 1,\n  "hostnames": [S5]\n}', "line 3 column 17", id="third-line"),
    ],
)
def test_malformed_json_says_where(client: TestClient, body: bytes, where: str) -> None:
    response = client.post("/add", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"<Error> Invalid request: malformed JSON at {where} (")


def test_lines_and_columns_count_from_one() -> None:
    assert where_json_broke(b"x", 0) == "line 1 column 1"
    assert where_json_broke(b"ab\ncd", 3) == "line 2 column 1"
    assert where_json_broke(b"ab\ncd", 4) == "line 2 column 2"


@pytest.mark.parametrize("n", [51, 256, 10_000])
def test_one_limit_and_one_message_for_n(client: TestClient, n: int) -> None:
    """LB_MAX_REPLICAS (50 here) is the only bound on /add's n, whatever its size."""
    response = client.post("/add", json={"n": n})
    assert response.status_code == 400, response.text
    assert response.json()["message"] == f"<Error> Cannot add {n} replicas: at most 50 are allowed (0 now)"
