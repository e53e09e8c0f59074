"""The shared vote store: PostgreSQL through a small asyncpg pool (LB_VOTES_URL), one for every LB instance.

The database holds the one-vote-per-voter rule (the primary key on the voter), so two LB instances, or
two requests of one voter at once, can never count a voter twice. The pool is made on first use and
again after the database went away: an LB starts, proxies and answers its other paths while the
database is down, and vote requests get 503 (VotesUnavailableError) until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from app.errors import InvalidRequestError, quote
from app.voting.options import validate_options
from app.voting.store import VotesUnavailableError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresVoteStore", "describe_url"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Schema changes, in order: version N's statements run once, in one transaction, on a database at N-1.
# A later change appends a version; it never edits one that has shipped.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE votes (
            voter_id   text PRIMARY KEY,
            option     text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX votes_by_option ON votes (option)",
        # One row: a random epoch (a recreated database never repeats an old ETag) and a counter of
        # changing votes, bumped in the vote's own transaction: every instance sees the same revision.
        """CREATE TABLE vote_revision (
            one     boolean PRIMARY KEY DEFAULT true CHECK (one),
            epoch   text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text),
            changes bigint NOT NULL DEFAULT 0
        )""",
        "INSERT INTO vote_revision DEFAULT VALUES",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

# Any number both LB instances agree on: the lock makes simultaneous first starts migrate one at a time.
_MIGRATION_LOCK = 0x63686C62  # "chlb"

_UPSERT = """
INSERT INTO votes (voter_id, option) VALUES ($1, $2)
ON CONFLICT (voter_id) DO UPDATE SET option = excluded.option, updated_at = now()
WHERE votes.option IS DISTINCT FROM excluded.option
RETURNING true
"""
_BUMP = "UPDATE vote_revision SET changes = changes + 1"
_COUNT = "SELECT option, count(*) FROM votes GROUP BY option"
_REVISION = "SELECT epoch || '-' || changes FROM vote_revision"

# What a lost or refused database looks like from asyncpg: the server gone (sockets, timeouts), a
# connection it closed, or its answer while shutting down or starting up (57P01, 57P03).
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    # "cannot switch to state ...": asyncpg's protocol state after the server went away mid-exchange.
    asyncpg.exceptions.InternalClientError,
)
UNAVAILABLE = "Votes are unavailable: the vote database cannot be reached; try again shortly"


def describe_url(url: str) -> str:
    """host:port/database of a PostgreSQL URL, for logs: never the user's password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path or '/'}"


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found. Refuses a newer one."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS chlb_schema_version (version integer NOT NULL)")
        found: int | None = await conn.fetchval("SELECT max(version) FROM chlb_schema_version")
        current = found or 0
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the vote database has schema version {current}; this LB knows up to {SCHEMA_VERSION}"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO chlb_schema_version (version) VALUES ($1)", version)
    return current


class SchemaTooNewError(Exception):
    """The database was migrated by a newer LB: this one must not write to it."""


class PostgresVoteStore:
    """Votes in PostgreSQL; every acknowledged vote is committed (the server fsyncs it) before `vote` returns.

    After a failure to connect, calls fail fast with 503 for `retry_interval` seconds, then the next call
    tries again: a down database costs each vote request one refused connect at most, not a timeout.
    """

    def __init__(
        self,
        url: str,
        options: Sequence[str],
        *,
        password: str | None = None,
        pool_size: int = 4,
        timeout: float = 2.0,
        retry_interval: float = 0.5,
    ) -> None:
        self.options: tuple[str, ...] = validate_options(options)
        self.where = describe_url(url)
        self._url = url
        self._password = password
        self._pool_size = pool_size
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()
        self._retry_at = 0.0
        self._reachable: bool | None = None  # None until the first attempt: log transitions only

    async def vote(self, voter_id: str, option: str) -> dict[str, int]:
        """Record (or replace) the voter's choice; return the counts after it, from the same transaction."""
        self._check_option(option)

        async def upsert(conn: asyncpg.Connection) -> dict[str, int]:
            async with conn.transaction():
                if await conn.fetchval(_UPSERT, voter_id, option):
                    await conn.execute(_BUMP)
                return self._counts(await conn.fetch(_COUNT))

        return await self._run(upsert)

    async def tally(self) -> dict[str, int]:
        """Votes per configured option, 0 for options nobody chose, in alphabetical order."""

        async def count(conn: asyncpg.Connection) -> dict[str, int]:
            return self._counts(await conn.fetch(_COUNT))

        return await self._run(count)

    async def choice_of(self, voter_id: str) -> str | None:
        """The voter's current option, or None if they have not voted (or chose a since-removed option)."""

        async def choice(conn: asyncpg.Connection) -> str | None:
            option: str | None = await conn.fetchval("SELECT option FROM votes WHERE voter_id = $1", voter_id)
            return option if option in self.options else None

        return await self._run(choice)

    async def revision(self) -> str:
        """The database's epoch and count of changing votes: the same on every instance."""

        async def read(conn: asyncpg.Connection) -> str:
            value: str = await conn.fetchval(_REVISION)
            return value

        return await self._run(read)

    async def close(self) -> None:
        """Close the pool (waiting at most `timeout` for connections in use)."""
        async with self._connecting:
            pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool)

    # ----- connections ---------------------------------------------------------------------------
    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        # Twice at most: a connection pooled before the database restarted fails on first use, and the
        # pool has dropped it by then, so the second try gets a new one (or finds the database down).
        for attempt in (1, 2):
            pool = await self._ready_pool()
            try:
                conn = await pool.acquire(timeout=self._timeout)
                try:
                    result = await work(conn)
                finally:
                    await self._release(pool, conn)
            except UNREACHABLE as exc:
                if attempt == 1 and isinstance(exc, asyncpg.ConnectionDoesNotExistError | ConnectionError):
                    continue
                self._mark_unreachable(exc)
                raise VotesUnavailableError(UNAVAILABLE) from exc
            self._mark_reachable()
            return result
        raise AssertionError("unreachable")  # pragma: no cover  (the loop returns or raises)

    async def _ready_pool(self) -> asyncpg.Pool:
        if time.monotonic() < self._retry_at:  # failed a moment ago: do not wait on it again yet
            raise VotesUnavailableError(UNAVAILABLE)
        if self._pool is not None:
            return self._pool
        async with self._connecting:  # one connect at a time; the others wait for its outcome
            if self._pool is not None:
                return self._pool
            if time.monotonic() < self._retry_at:  # the connect we waited for failed
                raise VotesUnavailableError(UNAVAILABLE)
            pool: Any = asyncpg.create_pool(
                self._url,
                password=self._password,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,  # connecting
                command_timeout=self._timeout,  # every query
                max_inactive_connection_lifetime=60.0,
            )
            try:
                await pool
                async with pool.acquire(timeout=self._timeout) as conn:
                    found = await migrate(conn)
            except UNREACHABLE as exc:
                pool.terminate()
                self._mark_unreachable(exc)
                raise VotesUnavailableError(UNAVAILABLE) from exc
            except (asyncpg.PostgresError, SchemaTooNewError) as exc:
                # Reachable but unusable (bad password, missing database, newer schema): say why in the
                # log, keep answering 503, and try again later: an operator may fix it without a restart.
                pool.terminate()
                self._retry_at = time.monotonic() + self._retry_interval
                logger.error("vote database %s refused: %s", self.where, exc)
                raise VotesUnavailableError(UNAVAILABLE) from exc
            if found < SCHEMA_VERSION:
                logger.info("vote database %s: schema %d -> %d", self.where, found, SCHEMA_VERSION)
            self._pool = pool
            return pool

    async def _release(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        # A connection the server dropped can fail its reset on release (asyncpg then terminates it
        # and the pool opens a new one later): the work is done by then, so its outcome stands.
        try:
            await pool.release(conn, timeout=self._timeout)
        except UNREACHABLE as exc:
            logger.debug("vote database connection dropped on release: %r", exc)

    def _mark_unreachable(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._retry_interval
        if self._reachable is not False:
            self._reachable = False
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.warning("vote database %s unreachable (%s); votes answer 503", self.where, reason)

    def _mark_reachable(self) -> None:
        if self._reachable is not True:
            self._reachable = True
            logger.info("vote database %s reachable", self.where)

    async def _close_pool(self, pool: asyncpg.Pool) -> None:
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except (TimeoutError, *UNREACHABLE):
            pool.terminate()

    # ----- rows ------------------------------------------------------------------------------------
    def _check_option(self, option: str) -> None:
        if option not in self.options:
            valid = ", ".join(self.options)
            raise InvalidRequestError(f"Unknown option {quote(option)}; valid options: {valid}")

    def _counts(self, rows: Sequence[Any]) -> dict[str, int]:
        # Rows for options no longer configured are kept (the voter may vote again) but not reported.
        counts = dict.fromkeys(sorted(self.options), 0)
        for option, count in rows:
            if option in counts:
                counts[option] = count
        return counts
