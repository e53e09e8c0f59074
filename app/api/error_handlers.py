"""Map every error to the contract's `{"message": "<Error> ...", "status": "failure"}` body, once."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import LoadBalancerError, quote
from app.metrics import Stats

logger = logging.getLogger(__name__)


def failure(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A contract error body; `message` gets the `<Error> ` prefix."""
    return JSONResponse(
        {"message": f"<Error> {message}", "status": "failure"}, status_code=status_code, headers=headers
    )


def where_json_broke(body: bytes, position: int) -> str:
    """`line L column C` (both from 1) of a character position in a request body."""
    line = body.count(b"\n", 0, position) + 1
    column = position - (body.rfind(b"\n", 0, position) + 1) + 1
    return f"line {line} column {column}"


def describe_validation_error(exc: RequestValidationError, body: bytes = b"") -> str:
    """One readable sentence from pydantic's error list, e.g. "body.n: Input should be ... (got 0)"."""
    parts = []
    for err in exc.errors():
        loc = err.get("loc", ())
        if err.get("type") == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
            reason = err.get("ctx", {}).get("error", "")
            where = where_json_broke(body, loc[1])
            parts.append(f"malformed JSON at {where}" + (f" ({reason})" if reason else ""))
            continue
        # An extra field's name is user input: quote long ones (`quote` cuts them to a sane length).
        loc = ".".join(str(p) if len(str(p)) <= 32 else quote(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) if parts else "Invalid request"


def _answer(request: Request, response: JSONResponse) -> JSONResponse:
    """Count the LB's own error answer (in /metrics), then return it."""
    stats = getattr(request.app.state, "stats", None)
    if isinstance(stats, Stats):
        stats.replied(response.status_code)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors, validation errors, HTTP errors, the unexpected: no traceback reaches a client."""

    @app.exception_handler(LoadBalancerError)
    async def on_domain_error(request: Request, exc: LoadBalancerError) -> JSONResponse:
        return _answer(request, failure(exc.status_code, exc.message))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = describe_validation_error(exc, await request.body())
        if "json" not in request.headers.get("content-type", "json"):
            message += " (send the body as JSON with 'Content-Type: application/json')"
        return _answer(request, failure(400, message))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _answer(request, failure(exc.status_code, str(exc.detail), exc.headers))  # WWW-Authenticate

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _answer(request, failure(500, "Internal error; see the load balancer's log"))
