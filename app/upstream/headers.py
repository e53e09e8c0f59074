"""Header and method sets that decide how a request or response is framed on each hop (RFC 9110)."""

from __future__ import annotations

# Hop-by-hop headers (RFC 9110 §7.6.1) plus content-length: each hop frames its own body.
HOP_BY_HOP_HEADERS = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
    )
)
# Not forwarded in a request; Expect: 100-continue is answered by the LB itself.
REQUEST_HOP_BY_HOP = HOP_BY_HOP_HEADERS | {b"expect"}
# Not forwarded in a response: its framing is re-decided for the client (content-length is read apart).
RESPONSE_HOP_BY_HOP = HOP_BY_HOP_HEADERS - {b"content-length"}
# Methods whose requests carry a body by definition, so they always announce its length (even 0).
BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
# Safe to send twice (RFC 9110 §9.2.2): only these may be repeated after a replica may have seen them.
IDEMPOTENT_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
