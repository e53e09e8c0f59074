"""Control plane: /rep, /add, /rm (membership as in the contract)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import MembershipDep
from app.api.schemas import AddRequest, Failure, Membership, MembershipResponse, RemoveRequest
from app.api.security import UNAUTHORIZED_RESPONSE, AdminDep
from app.control.membership import Membership as MembershipSource

router = APIRouter(tags=["replicas"])

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": Failure, "description": "Invalid request; nothing was changed"},
    **UNAUTHORIZED_RESPONSE,
}


def membership_response(membership: MembershipSource) -> MembershipResponse:
    """The contract's `{"message": {"N", "replicas"}, "status": "successful"}` body."""
    names = membership.names()
    return MembershipResponse(message=Membership(N=len(names), replicas=names))


@router.get("/rep", response_model=MembershipResponse)
async def list_replicas(membership: MembershipDep) -> MembershipResponse:
    """The desired members, natural-sorted (a replica being replaced is still listed)."""
    return membership_response(membership)


@router.post(
    "/add",
    response_model=MembershipResponse,
    dependencies=[AdminDep],
    responses={
        **_ERRORS,
        409: {"model": Failure, "description": "A name is already in use"},
        502: {"model": Failure, "description": "A replica could not be started; nothing was changed"},
    },
)
async def add_replicas(body: AddRequest, membership: MembershipDep) -> MembershipResponse:
    """Add `n` replicas: the given `hostnames` first, generated names for the rest.

    Answers after every new replica answers its /heartbeat and is on the ring. All or nothing.
    """
    await membership.add(body.n, body.hostnames)
    return membership_response(membership)


@router.delete("/rm", response_model=MembershipResponse, dependencies=[AdminDep], responses=_ERRORS)
async def remove_replicas(body: RemoveRequest, membership: MembershipDep) -> MembershipResponse:
    """Remove `n` replicas: the given `hostnames` first, then the most recently added ones.

    `n` larger than the number of replicas removes them all. A removed name can be added again.
    """
    await membership.remove(body.n, body.hostnames)
    return membership_response(membership)
