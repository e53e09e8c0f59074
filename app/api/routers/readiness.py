"""GET /readyz: ready means routable. /healthz (status.py) stays liveness: it answers while the LB runs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.deps import MembershipDep
from app.api.schemas import Failure
from app.control.lifecycle import State
from app.control.membership import Membership

router = APIRouter(tags=["status"])


class Ready(BaseModel):
    """Every desired replica is on the ring (or failed to start and backs off)."""

    message: str = Field(examples=["ready: 3 replicas on the ring"])
    status: str = "successful"


def waiting_for(membership: Membership) -> list[str]:
    """Desired members not on the ring yet, each with its state, e.g. `server2 (starting)`.

    One backing off after a failed start does not hold readiness back: it may fail for long, and the
    others route meanwhile.
    """
    on_ring = membership.table.upstreams
    states = {m.name: m.state for m in membership.replicas()}
    waits = []
    for name in membership.names():
        state = states.get(name)
        if name in on_ring or state is State.BACKOFF:
            continue
        waits.append(f"{name} ({state.value if state else 'not started'})")
    return waits


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": Failure, "description": "replicas are not on the ring yet (named)"}},
)
async def readyz(membership: MembershipDep) -> Ready | JSONResponse:
    """200 once every desired replica is on the ring (or backs off after a failed start); else 503
    naming what it waits for. Health checks and `make docker-up` / `make swarm-up` wait on it."""
    waits = waiting_for(membership)
    if waits:
        message = f"<Error> Not ready: waiting for {', '.join(waits)}"
        return JSONResponse({"message": message, "status": "failure"}, status_code=503)
    return Ready(message=f"ready: {len(membership.table.upstreams)} replicas on the ring")
