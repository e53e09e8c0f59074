"""The catch-all proxy route: documents the data path in /docs.

Registered LAST. Proxied paths never reach it when the LB serves: the data plane's protocol
(app.dataplane.server) sends them to the replicas before any ASGI app runs. An app reached without that
protocol (an ASGI test client) gets a 503 that says so.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response

from app.api.schemas import Failure
from app.errors import quote

router = APIRouter(tags=["proxy"])

NOT_THROUGH_ASGI = "Proxied paths are served by the LB's own HTTP protocol (python -m app), not through ASGI"
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


async def proxy(path: str, request: Request) -> Response:
    """Forward to the replica the hash ring picks for the request's key (query parameter `id` by default).

    Method, path, query string, headers and body pass through; the replica's status, headers and body
    come back unchanged. A request without a key gets a random 6-digit id.
    """
    if request.app.state.is_reserved(request.url.path):
        detail = f"Method {request.method} not allowed on {quote('/' + path)}"
        raise HTTPException(status_code=405, detail=detail)
    raise HTTPException(status_code=503, detail=NOT_THROUGH_ASGI)


# One route per method, so each gets its own operation id in the OpenAPI document.
for _method in PROXY_METHODS:
    router.add_api_route(
        "/{path:path}",
        proxy,
        methods=[_method],
        operation_id=f"proxy_{_method.lower()}",
        summary=f"Proxy {_method}",
        responses={
            400: {"model": Failure, "description": "The path does not exist on the replicas"},
            503: {"model": Failure, "description": "No replica could answer"},
            504: {"model": Failure, "description": "The replica did not answer in time"},
        },
    )
