"""The admin token: mutating control routes need `Authorization: Bearer <LB_ADMIN_TOKEN>` when it is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.deps import SettingsDep
from app.api.schemas import Failure

# auto_error=False: a missing header must give the contract's 401 body, not FastAPI's own 403.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The value of LB_ADMIN_TOKEN (only needed when the LB was started with one).",
)

UNAUTHORIZED = "Missing or invalid admin token: send 'Authorization: Bearer <LB_ADMIN_TOKEN>'"

# For the `responses=` of every protected route, so /docs and the schema show the 401.
UNAUTHORIZED_RESPONSE: dict[int | str, dict[str, object]] = {
    401: {"model": Failure, "description": "LB_ADMIN_TOKEN is set and the request lacks the right token"},
}


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison, so response timing does not leak how much of a guess was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Let the request through when no token is configured or the bearer token matches; else 401."""
    expected = settings.admin_token
    if expected is None:
        return
    if credentials is None or not token_matches(credentials.credentials, expected.get_secret_value()):
        raise HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


AdminDep = Depends(require_admin)
