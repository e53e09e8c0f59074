"""Dependency providers: routers reach lifespan-owned resources only through these.

Tests swap a provider with `app.dependency_overrides[get_strategy] = ...`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Request

from app.metrics import Stats
from app.ring import HashStrategy, make_strategy
from app.settings import Settings

if TYPE_CHECKING:
    from app.control.membership import Membership
    from app.dataplane.hub import WorkerHub
    from app.reload import Reloader
    from app.voting.store import VoteStore


def get_settings(request: Request) -> Settings:
    """The Settings object the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_strategy(request: Request) -> HashStrategy:
    """The hash strategy in use: the one named by the settings, or a test's dependency override.

    The lifespan resolves it once (see resolve_strategy) because the membership builds its rings with it.
    """
    strategy: HashStrategy = request.app.state.strategy
    return strategy


def resolve_strategy(app: FastAPI) -> HashStrategy:
    """`app.dependency_overrides[get_strategy]` when set, else the strategy the settings name."""
    override = app.dependency_overrides.get(get_strategy)
    if override is not None:
        strategy: HashStrategy = override()
        return strategy
    settings: Settings = app.state.settings
    return make_strategy(settings.strategy, vnodes=settings.vnodes)


def get_membership(request: Request) -> Membership:
    """Desired membership: the members, their health and the current routing table."""
    membership: Membership = request.app.state.membership
    return membership


def get_process_stats(request: Request) -> Stats:
    """This process's own request and lifecycle counters (the owner's, with LB_WORKERS > 1)."""
    stats: Stats = request.app.state.stats
    return stats


def get_hub(request: Request) -> WorkerHub | None:
    """The data-plane worker processes' supervisor (LB_WORKERS > 1, once they started); else None."""
    hub: WorkerHub | None = getattr(request.app.state, "hub", None)
    return hub


def get_reloader(request: Request) -> Reloader:
    """The configuration's reload (SIGHUP, POST /config/reload) and when it last happened."""
    reloader: Reloader = request.app.state.reloader
    return reloader


ReloaderDep = Annotated["Reloader", Depends(get_reloader)]
ProcessStatsDep = Annotated[Stats, Depends(get_process_stats)]
HubDep = Annotated["WorkerHub | None", Depends(get_hub)]


def get_stats(own: ProcessStatsDep, hub: HubDep) -> Stats:
    """Request and lifecycle counters of every data-plane process (what /metrics exports)."""
    return own if hub is None else hub.stats.merged_with(own)


def get_vote_store(request: Request) -> VoteStore:
    """The durable vote store."""
    store: VoteStore = request.app.state.votes
    return store


SettingsDep = Annotated[Settings, Depends(get_settings)]
StrategyDep = Annotated[HashStrategy, Depends(get_strategy)]
MembershipDep = Annotated["Membership", Depends(get_membership)]
StatsDep = Annotated[Stats, Depends(get_stats)]
VoteStoreDep = Annotated["VoteStore", Depends(get_vote_store)]
