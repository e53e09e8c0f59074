"""HTTP/1.1 wire pieces the data plane writes itself: status lines, error responses, chunks, request heads."""

from __future__ import annotations

from http import HTTPStatus

from app.upstream.headers import BODY_METHODS, REQUEST_HOP_BY_HOP

NO_BODY_STATUSES = frozenset((204, 304))
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus
}


class RequestHead:
    """One parsed client request head; header names are lower-case.

    A plain class, not a dataclass: built once per request, and a compiled dataclass would still run
    the interpreted __init__ that dataclasses generates.
    """

    __slots__ = (
        "chunked",
        "expect_continue",
        "headers",
        "keep_alive",
        "length",
        "method",
        "path",
        "query",
        "secure",
        "target",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,  # as received: path and query, still percent-encoded
        path: str,  # percent-decoded, as ASGI's scope["path"]
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        version: str,  # "1.1" or "1.0"
        keep_alive: bool,
        upgrade: bool,
        length: int | None,  # Content-Length, if any
        chunked: bool,
        expect_continue: bool,
        secure: bool = False,  # came over TLS: X-Forwarded-Proto says https
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.headers = headers
        self.version = version
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        self.length = length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.secure = secure

    @property
    def has_body(self) -> bool:
        """Whether body bytes follow the head."""
        return self.chunked or bool(self.length)


def status_line(status: int) -> bytes:
    """`HTTP/1.1 <status> <reason>\\r\\n`, rendered once per status."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d \r\n" % status
    return line


def error_response(status: int, body: bytes, *, close: bool) -> bytes:
    """A complete JSON error response."""
    return b"".join(
        (
            status_line(status),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_upstream_head(head: RequestHead, client_ip: bytes) -> bytes:
    """The request head for the replica: end-to-end headers, X-Forwarded-For/-Proto, this hop's framing."""
    drop: frozenset[bytes] = REQUEST_HOP_BY_HOP
    upgrade = b""
    forwarded_for = b""
    for name, value in head.headers:
        if name == b"connection":
            # Headers the client named in Connection are hop-by-hop too.
            drop = drop | {t.strip().lower() for t in value.split(b",")}
        elif name == b"upgrade":
            upgrade = value
    parts = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
    for name, value in head.headers:
        if name in drop:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        if name == b"x-forwarded-proto":
            continue  # ours to say: the client could claim https over plain HTTP
        parts += (name, b": ", value, b"\r\n")
    chain = forwarded_for + b", " + client_ip if forwarded_for else client_ip
    parts += (b"x-forwarded-for: ", chain, b"\r\n")
    parts += (b"x-forwarded-proto: ", b"https" if head.secure else b"http", b"\r\n")
    if head.chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif head.length is not None:
        parts.append(b"content-length: %d\r\n" % head.length)
    elif head.method in BODY_METHODS:
        parts.append(b"content-length: 0\r\n")
    if head.upgrade and upgrade:
        parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
