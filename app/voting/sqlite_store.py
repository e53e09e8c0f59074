"""The embedded vote store: one SQLite file per LB (the default when LB_VOTES_URL is unset).

Counts are derived from the voters' rows (GROUP BY), never kept as separate counters, so they cannot
drift from the votes: a voter's new vote replaces the old row and both counts move together.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from app.errors import InvalidRequestError, quote
from app.voting.options import validate_options

__all__ = ["SqliteVoteStore"]

logger = logging.getLogger(__name__)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    voter_id   TEXT PRIMARY KEY,
    option     TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS votes_by_option ON votes (option);
"""

# The WHERE clause turns a repeated identical vote into a no-op, so `rowcount` says whether anything changed.
_UPSERT = """
INSERT INTO votes (voter_id, option, updated_at) VALUES (?, ?, ?)
ON CONFLICT (voter_id) DO UPDATE SET option = excluded.option, updated_at = excluded.updated_at
WHERE votes.option != excluded.option
"""

_COUNT = "SELECT option, COUNT(*) FROM votes GROUP BY option"


class SqliteVoteStore:
    """Votes keyed by voter id; every acknowledged vote is committed (fsynced) before `vote` returns.

    The async methods run the blocking sqlite3 calls in a worker thread, off the event loop.

    One connection guarded by a lock, not a connection per thread: SQLite serialises writers anyway,
    every query here takes microseconds, and a single connection can be closed deterministically by
    `close()` (per-thread connections would live on in the threadpool's idle workers).
    """

    def __init__(self, path: Path, options: Sequence[str]) -> None:
        self.options: tuple[str, ...] = validate_options(options)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._version = 0
        # Random per open, so a (instance, version) pair seen before a restart never matches one after it.
        self.instance = secrets.token_hex(4)
        self._conn = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
        try:
            # WAL: readers never block the writer. FULL: the WAL is fsynced at every commit, so an
            # acknowledged vote survives a crash of the process and of the machine.
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                logger.warning("SQLite at %s refused WAL mode (got %s)", path, mode)
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._conn:
                self._conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self._conn.close()
            raise

    async def vote(self, voter_id: str, option: str) -> dict[str, int]:
        """Record (or replace) the voter's choice; return the counts after it, from the same transaction."""
        self._check_option(option)
        return await asyncio.to_thread(self._vote, voter_id, option)

    async def tally(self) -> dict[str, int]:
        """Votes per configured option, 0 for options nobody chose, in alphabetical order."""
        return await asyncio.to_thread(self._tally)

    async def choice_of(self, voter_id: str) -> str | None:
        """The voter's current option, or None if they have not voted (or chose a since-removed option)."""
        return await asyncio.to_thread(self._choice_of, voter_id)

    async def revision(self) -> str:
        """Changes whenever a count changes: this open's random id and a counter of changing votes."""
        return f"{self.instance}-{self._version}"

    async def close(self) -> None:
        """Close the connection; later calls raise sqlite3.ProgrammingError."""
        with self._lock:
            self._conn.close()

    def _vote(self, voter_id: str, option: str) -> dict[str, int]:
        with self._lock:
            with self._conn:
                changed = self._conn.execute(_UPSERT, (voter_id, option, time.time())).rowcount
                counts = self._count()
            # Only after the commit: a poller that sees the new revision must also see the new rows.
            if changed:
                self._version += 1
        return counts

    def _tally(self) -> dict[str, int]:
        with self._lock:
            return self._count()

    def _choice_of(self, voter_id: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT option FROM votes WHERE voter_id = ?", (voter_id,)).fetchone()
        option: str | None = row[0] if row else None
        return option if option in self.options else None

    def _check_option(self, option: str) -> None:
        if option not in self.options:
            valid = ", ".join(self.options)
            raise InvalidRequestError(f"Unknown option {quote(option)}; valid options: {valid}")

    def _count(self) -> dict[str, int]:
        # Rows for options no longer configured are kept (the voter may vote again) but not reported.
        counts = dict.fromkeys(sorted(self.options), 0)
        for option, count in self._conn.execute(_COUNT):
            if option in counts:
                counts[option] = count
        return counts

