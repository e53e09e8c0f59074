"""LB_HTTPS_REDIRECT: a plain-HTTP request is answered 308 with the same URL on the HTTPS port.

Health probes (/healthz, /readyz) are answered as they are: container health checks speak plain HTTP.
"""

from __future__ import annotations

from app.dataplane.http1 import RequestHead, status_line
from app.dataplane.seams import ClientSide

NOT_REDIRECTED = frozenset(("/healthz", "/readyz"))


def https_location(head: RequestHead, port: int, fallback_host: str) -> bytes:
    """https://<the Host header's host, or ours>[:port]<target>."""
    host = fallback_host
    for name, value in head.headers:
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host.startswith("["):  # [::1]:5000
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    elif ":" in host:  # a bare IPv6 address
        host = f"[{host}]"
    authority = host if port == 443 else f"{host}:{port}"
    return b"https://" + authority.encode("latin-1") + head.target


class RedirectExchange:
    """One plain-HTTP request answered with 308 to its HTTPS URL (an Exchange by its shape)."""

    upstream = ""  # answered by the LB itself
    began = 0.0
    logged = False
    leftover = b""

    def __init__(self, client: ClientSide, head: RequestHead, port: int, fallback_host: str) -> None:
        self._client = client
        self.head = head
        self.body_done = not head.has_body
        self.status = 308
        self._location = https_location(head, port, fallback_host)
        self._started = False

    @property
    def started(self) -> bool:
        """Whether the answer went out."""
        return self._started

    def start(self) -> None:
        """Answer at once; a body the client sends is read and dropped."""
        self._started = True
        body = b"" if self.head.method == b"HEAD" else b"Permanent Redirect\n"
        self._client.write(
            b"".join(
                (
                    status_line(308),
                    b"location: ",
                    self._location,
                    b"\r\ncontent-type: text/plain\r\ncontent-length: 19\r\n\r\n",
                    body,
                )
            )
        )
        self._client.finish(self)

    def on_request_body(self, data: bytes) -> None:
        """Dropped."""

    def on_request_end(self) -> None:
        """Nothing to do."""
        self.body_done = True

    def on_client_writable(self, writable: bool) -> None:
        """Nothing streams."""

    def on_client_lost(self) -> None:
        """Nothing to let go of."""
