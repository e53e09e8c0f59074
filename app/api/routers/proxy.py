"""The catch-all proxy route: documents the data path in /docs and serves it when the fast path is off.

Registered LAST. With the fast path on (default), FastPathMiddleware sends these requests to the proxy
before FastAPI routing; the behaviour is the same either way.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.api.schemas import Failure
from app.errors import quote

router = APIRouter(tags=["proxy"])

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class ProxiedResponse(Response):
    """Hands the raw ASGI exchange to the proxy instead of rendering a body."""

    def __init__(self, request: Request) -> None:
        super().__init__()  # the attributes Starlette's wrappers read (background, headers, ...)
        self._request = request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._request.app.state.proxy(scope, receive, send)


async def proxy(path: str, request: Request) -> Response:
    """Forward to the replica the hash ring picks for the request's key (query parameter `id` by default).

    Method, path, query string, headers and body pass through; the replica's status, headers and body
    come back unchanged. A request without a key gets a random 6-digit id.
    """
    if request.app.state.is_reserved(request.url.path):
        detail = f"Method {request.method} not allowed on {quote('/' + path)}"
        raise HTTPException(status_code=405, detail=detail)
    return ProxiedResponse(request)


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
