"""Where a request's hashing key comes from: query parameter, header, cookie, path or client address.

Each extractor reads the raw ASGI scope (no Request object) because it runs on every proxied request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from app.settings import KeySourceName

_AMPERSAND, _PERCENT, _PLUS = ord("&"), ord("%"), ord("+")

KeyExtractor = Callable[[MutableMapping[str, Any]], "str | None"]


def random_key() -> str:
    """A 6-digit request id, as the course's design draws for requests that carry no key."""
    return str(random.randint(100_000, 999_999))


def _decode(raw: bytes) -> str | None:
    if not raw:
        return None
    if _PERCENT in raw or _PLUS in raw:  # ints: a memchr, several times cheaper than a bytes needle
        return unquote_plus(raw.decode("latin-1"))
    return raw.decode("latin-1")


def query_key(name: str) -> KeyExtractor:
    """`?<name>=<key>`; the first occurrence wins."""
    prefix = name.encode() + b"="

    def extract(scope: MutableMapping[str, Any]) -> str | None:
        # find() rather than split("&"): no list of parts on the hot path.
        qs: bytes = scope["query_string"]
        start = qs.find(prefix)
        while start > 0 and qs[start - 1] != _AMPERSAND:  # e.g. "xid=": not this parameter
            start = qs.find(prefix, start + 1)
        if start < 0:
            return None
        start += len(prefix)
        end = qs.find(b"&", start)
        return _decode(qs[start:] if end < 0 else qs[start:end])

    return extract


def header_key(name: str) -> KeyExtractor:
    """The value of request header `name` (case-insensitive)."""
    wanted = name.lower().encode()

    def extract(scope: MutableMapping[str, Any]) -> str | None:
        for header, value in scope["headers"]:
            if header == wanted:
                return value.decode("latin-1") or None
        return None

    return extract


def cookie_key(name: str) -> KeyExtractor:
    """The value of cookie `name`."""
    prefix = name + "="

    def extract(scope: MutableMapping[str, Any]) -> str | None:
        for header, value in scope["headers"]:
            if header == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :] or None
        return None

    return extract


def path_key(_: str) -> KeyExtractor:
    """The request path, so every URL sticks to one replica."""

    def extract(scope: MutableMapping[str, Any]) -> str | None:
        path: str = scope["path"]
        return path

    return extract


def client_key(_: str) -> KeyExtractor:
    """The client's IP address: source-IP affinity."""

    def extract(scope: MutableMapping[str, Any]) -> str | None:
        client = scope.get("client")
        return client[0] if client else None

    return extract


KEY_SOURCES: dict[KeySourceName, Callable[[str], KeyExtractor]] = {
    "query": query_key,
    "header": header_key,
    "cookie": cookie_key,
    "path": path_key,
    "client": client_key,
}


def make_key_extractor(source: KeySourceName, name: str) -> KeyExtractor:
    """Pick the extractor named by the `key_source` setting."""
    return KEY_SOURCES[source](name)
