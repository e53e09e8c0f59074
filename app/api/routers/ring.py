"""Ring introspection: shares and points (/ring), a key's route (/route), what a change moves (/ring/plan).

All read-only: /ring/plan builds rings aside and changes nothing, so none of these needs the admin token.
The sample-based routes are plain `def`: 10,000 lookups run in the threadpool, off the proxy's event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import MembershipDep, SettingsDep, StrategyDep
from app.api.schemas import Failure
from app.control.naming import natural_key
from app.errors import InvalidRequestError, ReplicaExistsError, UnknownReplicaError, quote
from app.ring import Ring, introspect

router = APIRouter(tags=["ring"])


class RingMember(BaseModel):
    """One replica on the ring and its share of the key sample."""

    name: str
    share: float = Field(ge=0, le=1, description="fraction of the sample's keys it gets", examples=[0.334])


class RingPoint(BaseModel):
    """One virtual node or slot on the circle."""

    replica: str
    position: float = Field(ge=0, lt=1, description="place on the circle, as a fraction of it")


class RingResponse(BaseModel):
    """The ring the proxy uses now."""

    strategy: str = Field(examples=["rendezvous"])
    sample_size: int = Field(description="keys in the fixed sample the shares are measured on")
    members: list[RingMember] = Field(description="replicas on the ring, natural-sorted; shares sum to 1")
    points: list[RingPoint] = Field(
        description="virtual nodes or slots in ring order; [] for rendezvous, maglev"
    )
    status: str = "successful"


class RouteResponse(BaseModel):
    """Where the proxy sends a key now, and where it would retry."""

    key: str
    replica: str = Field(description="the replica the proxy sends the key to")
    fallbacks: list[str] = Field(
        description="the next distinct replicas in the proxy's retry order (at most LB_MAX_TRIES - 1)"
    )
    status: str = "successful"


class PlanRequest(BaseModel):
    """A membership change to evaluate; nothing is changed."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "2" or true is not a number

    add: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256, description="names that would be added", examples=[["S9"]]
    )
    remove: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256, description="members that would be removed", examples=[[]]
    )


class Flow(BaseModel):
    """Keys of the sample that would move from one replica to another."""

    model_config = ConfigDict(populate_by_name=True)

    source: str | None = Field(alias="from", description="null when no replica is on the ring now")
    target: str | None = Field(alias="to", description="null when no replica would be left")
    keys: int


class PlanResponse(BaseModel):
    """What the change would move, measured on the fixed key sample."""

    sample_size: int
    moved: int = Field(description="sample keys whose replica would change")
    moved_share: float = Field(ge=0, le=1)
    flows: list[Flow] = Field(description="sorted by keys, most first")
    before: list[str] = Field(description="members on the ring now, natural-sorted")
    after: list[str] = Field(description="members on the ring after the change, natural-sorted")
    status: str = "successful"


_cached: list[tuple[Ring, RingResponse]] = []  # the last answer: rings are immutable, so identity is a key


@router.get("/ring", response_model=RingResponse)
def show_ring(membership: MembershipDep, strategy: StrategyDep) -> RingResponse:
    """The members on the ring with their share of a fixed sample of 10,000 keys, and the ring's points."""
    ring = membership.table.ring
    if _cached and _cached[0][0] is ring:
        return _cached[0][1]
    shares = introspect.shares(ring, introspect.sample_keys())
    answer = RingResponse(
        strategy=strategy.name,
        sample_size=introspect.SAMPLE_SIZE,
        members=[
            RingMember(name=name, share=shares.get(name, 0.0))
            for name in sorted(membership.table.upstreams, key=natural_key)
        ],
        points=[RingPoint(replica=name, position=pos) for pos, name in introspect.positions(ring)],
    )
    _cached[:] = [(ring, answer)]
    return answer


@router.get(
    "/route",
    response_model=RouteResponse,
    responses={
        400: {"model": Failure, "description": "`key` is missing or empty"},
        503: {"model": Failure, "description": "No replica is on the ring"},
    },
)
async def show_route(
    membership: MembershipDep,
    settings: SettingsDep,
    key: Annotated[str, Query(min_length=1, max_length=4096, description="the request key, e.g. an `id`")],
) -> RouteResponse:
    """The replica a request with this key goes to now, and the proxy's fallback order after it."""
    replica, fallbacks = introspect.route(membership.table.ring, key, settings.max_tries)
    return RouteResponse(key=key, replica=replica, fallbacks=fallbacks)


@router.post(
    "/ring/plan",
    response_model=PlanResponse,
    responses={
        400: {"model": Failure, "description": "Unknown name to remove, too many replicas, ..."},
        409: {"model": Failure, "description": "A name to add is already in use (as /add answers)"},
    },
)
def plan_change(
    body: PlanRequest, membership: MembershipDep, settings: SettingsDep, strategy: StrategyDep
) -> PlanResponse:
    """Which sample keys an /add or /rm of these names would move, and between which replicas. Read-only."""
    members = set(membership.names())
    unknown = [name for name in body.remove if name not in members]
    if unknown:
        raise UnknownReplicaError(
            f"Replica name '{unknown[0]}' is not a member; members are {membership.names()}"
        )
    taken = [name for name in body.add if name in members]
    if taken:
        raise ReplicaExistsError(f"Replica name {quote(taken[0])} is already in use")  # as /add says
    if len(members | set(body.add)) > settings.max_replicas:
        raise InvalidRequestError(f"At most {settings.max_replicas} replicas are allowed")
    try:
        result = introspect.plan(
            strategy, list(membership.table.upstreams), body.add, body.remove, introspect.sample_keys()
        )
    except ValueError as exc:
        raise InvalidRequestError(f"Cannot plan this change with strategy {strategy.name}: {exc}") from exc
    return PlanResponse(
        sample_size=result.sample_size,
        moved=result.moved,
        moved_share=result.moved / result.sample_size,
        flows=[Flow(source=b, target=a, keys=n) for b, a, n in result.flows],
        before=sorted(result.before, key=natural_key),
        after=sorted(result.after, key=natural_key),
    )
