"""Where the hashing key comes from: each key source on a raw ASGI scope, and one through the real LB."""

from __future__ import annotations

from typing import Any

import pytest

from app.dataplane.keys import make_key_extractor, random_key


def scope(query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None, path: str = "/home") -> Any:
    return {"query_string": query, "headers": headers or [], "path": path, "client": ("10.1.2.3", 5555)}


@pytest.mark.parametrize(
    ("source", "name", "request_scope", "expected"),
    [
        ("query", "id", scope(b"id=123456"), "123456"),
        ("query", "id", scope(b"x=1&id=42&id=43"), "42"),
        ("query", "id", scope(b"id=a%20b+c"), "a b c"),
        ("query", "id", scope(b"xid=1"), None),
        ("query", "id", scope(b"xid=5&id=7"), "7"),  # the name inside another one's is skipped
        ("query", "id", scope(b"aid=1&bid=2"), None),
        ("query", "id", scope(b"id=1&x=2"), "1"),
        ("query", "id", scope(b"id="), None),
        ("query", "user", scope(b"id=1&user=bob"), "bob"),
        ("header", "X-User", scope(headers=[(b"x-user", b"alice")]), "alice"),
        ("header", "X-User", scope(headers=[(b"x-other", b"alice")]), None),
        ("cookie", "sid", scope(headers=[(b"cookie", b"a=1; sid=s-9; b=2")]), "s-9"),
        ("cookie", "sid", scope(headers=[(b"cookie", b"sidx=1")]), None),
        ("path", "", scope(path="/users/7"), "/users/7"),
        ("client", "", scope(), "10.1.2.3"),
    ],
)
def test_key_sources(source: Any, name: str, request_scope: Any, expected: str | None) -> None:
    assert make_key_extractor(source, name)(request_scope) == expected


def test_random_key_is_six_digits() -> None:
    keys = {random_key() for _ in range(200)}
    assert all(len(k) == 6 and k.isdigit() for k in keys)
    assert len(keys) > 150
