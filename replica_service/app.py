"""Replica endpoints exactly as in the contract: /home and /heartbeat; anything else is 404."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Response


def create_app(server_id: str | None = None) -> FastAPI:
    """Build the replica app; `server_id` defaults to the SERVER_ID environment variable."""
    name = server_id if server_id is not None else os.environ.get("SERVER_ID", "unknown")
    # The body never changes, so render it once instead of per request.
    home_bytes = json.dumps(
        {"message": f"Hello from Server: {name}", "status": "successful"}, separators=(",", ":")
    ).encode()
    app = FastAPI(title=f"Replica {name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route("/home", methods=["GET", "HEAD"])
    async def home() -> Response:
        """Say which replica answered."""
        return Response(home_bytes, media_type="application/json")

    @app.api_route("/heartbeat", methods=["GET", "HEAD"])
    async def heartbeat() -> Response:
        """Liveness probe for the LB: 200 with an empty body."""
        return Response(status_code=200)

    return app
