"""The seam for where votes live: one Protocol, two stores (SQLite embedded, PostgreSQL shared).

`open_vote_store(settings)` picks one at wiring: PostgreSQL when LB_VOTES_URL is set (every LB instance
then shows the same counts), else the SQLite file at LB_DB_PATH. Routes depend on the Protocol only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from app.errors import LoadBalancerError

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = ["VoteStore", "VotesUnavailableError", "open_vote_store"]

logger = logging.getLogger(__name__)


class VotesUnavailableError(LoadBalancerError):
    """The vote database cannot be reached right now; the LB keeps serving everything else."""

    status_code = 503


class VoteStore(Protocol):
    """Votes keyed by voter id (one per voter); counts derived from the votes, never kept apart."""

    options: tuple[str, ...]

    async def vote(self, voter_id: str, option: str) -> dict[str, int]:
        """Record (or replace) the voter's choice, committed durably; return the counts after it."""
        ...

    async def tally(self) -> dict[str, int]:
        """Votes per configured option, 0 for options nobody chose, in alphabetical order."""
        ...

    async def choice_of(self, voter_id: str) -> str | None:
        """The voter's current option, or None (not voted, or a since-removed option)."""
        ...

    async def revision(self) -> str:
        """An opaque tag that changes whenever a count changes (the ETag of GET /api/votes)."""
        ...

    async def close(self) -> None:
        """Release the connection(s); the store is not used afterwards."""
        ...


def open_vote_store(settings: Settings) -> VoteStore:
    """The store the settings name; no I/O for PostgreSQL (it connects on first use, so a down database
    at start-up does not stop the LB)."""
    if settings.votes_url is not None:
        from app.voting.postgres_store import PostgresVoteStore  # asyncpg only when it is used

        password = settings.votes_password.get_secret_value() if settings.votes_password else None
        store = PostgresVoteStore(
            settings.votes_url.get_secret_value(),
            settings.vote_options,
            password=password,
            pool_size=settings.votes_pool_size,
            timeout=settings.votes_timeout,
        )
        logger.info("votes: PostgreSQL at %s (connects on first use)", store.where)  # never the password
        return store
    from app.voting.sqlite_store import SqliteVoteStore

    logger.info("votes: SQLite file %s (this LB's own; LB_VOTES_URL shares them)", settings.db_path)
    return SqliteVoteStore(settings.db_path, settings.vote_options)
