"""The contract's error body, built in one place for every test that checks one."""

from __future__ import annotations

from typing import Any

import httpx


def failure(message: str) -> dict[str, str]:
    """`{"message": "<Error> ...", "status": "failure"}` as the contract writes it."""
    return {"message": f"<Error> {message}", "status": "failure"}


def assert_failure(response: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    """The response is the contract's error body with `status` (and exactly `message`, if given)."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "failure" and body["message"].startswith("<Error> "), body
    if message is not None:
        assert body == failure(message)
    return body
