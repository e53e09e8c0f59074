"""The vote stores (SQLite and PostgreSQL, the same tests for both): one vote per voter held by the
database, counts derived from rows, concurrent voters, and durability under SIGKILL (SQLite)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.errors import InvalidRequestError
from app.voting.postgres_store import SCHEMA_VERSION, PostgresVoteStore
from app.voting.sqlite_store import SqliteVoteStore
from app.voting.store import VoteStore, VotesUnavailableError
from tests.postgres_support import PgCluster

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

OPTIONS = ("kubernetes", "docker", "helm", "prometheus")
ROOT = Path(__file__).resolve().parents[3]

Opener = Callable[[tuple[str, ...] | list[str]], VoteStore]
RowReader = Callable[[], Awaitable[dict[str, str]]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "votes.sqlite3"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db_path: Path) -> Iterator[tuple[Opener, RowReader]]:
    """How to open a store on one fresh database, and how to read its rows behind the store's back."""
    if request.param == "sqlite":

        def open_sqlite(options: tuple[str, ...] | list[str]) -> VoteStore:
            return SqliteVoteStore(db_path, options)

        async def sqlite_rows() -> dict[str, str]:
            return rows(db_path)

        yield open_sqlite, sqlite_rows
        return
    cluster: PgCluster = request.getfixturevalue("postgres")
    url = cluster.url(cluster.create_database())

    def open_postgres(options: tuple[str, ...] | list[str]) -> VoteStore:
        return PostgresVoteStore(url, options)

    async def postgres_rows() -> dict[str, str]:
        conn = await asyncpg.connect(url)
        try:
            found = await conn.fetch("SELECT voter_id, option FROM votes")
            return {r["voter_id"]: r["option"] for r in found}
        finally:
            await conn.close()

    yield open_postgres, postgres_rows


@pytest.fixture
def open_store(backend: tuple[Opener, RowReader]) -> Opener:
    return backend[0]


@pytest.fixture
def stored(backend: tuple[Opener, RowReader]) -> RowReader:
    """The voter -> option rows, read through a connection of our own (not the store's)."""
    return backend[1]


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[VoteStore]:
    store = open_store(OPTIONS)
    yield store
    await store.close()


def rows(db_path: Path) -> dict[str, str]:
    """The voter -> option rows of a SQLite file, read through a connection of our own."""
    with sqlite3.connect(db_path) as conn:
        result = dict(conn.execute("SELECT voter_id, option FROM votes").fetchall())
    conn.close()
    return result


async def test_sqlite_creates_parent_directory_and_uses_wal(db_path: Path) -> None:
    store = SqliteVoteStore(db_path, OPTIONS)
    await store.close()
    assert db_path.is_file()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_postgres_schema_is_versioned_and_migrated_once(postgres: PgCluster) -> None:
    database = postgres.create_database()
    stores = [PostgresVoteStore(postgres.url(database), OPTIONS) for _ in range(4)]
    try:
        # Four first uses at once (two LB instances starting together): one migration, no error.
        await asyncio.gather(*(s.tally() for s in stores))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    versions = postgres.sql("SELECT version FROM chlb_schema_version ORDER BY version", database)
    assert versions.split() == [str(v) for v in range(1, SCHEMA_VERSION + 1)]
    key = postgres.sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'votes'::regclass AND i.indisprimary",
        database,
    )
    assert key.split() == ["voter_id"]  # the database holds one vote per voter


async def test_postgres_refuses_a_schema_newer_than_it_knows(postgres: PgCluster) -> None:
    database = postgres.create_database()
    store = PostgresVoteStore(postgres.url(database), OPTIONS)
    try:
        await store.tally()
        postgres.sql(f"INSERT INTO chlb_schema_version VALUES ({SCHEMA_VERSION + 1})", database)
        newer = PostgresVoteStore(postgres.url(database), OPTIONS)
        with pytest.raises(VotesUnavailableError):
            await newer.tally()
        await newer.close()
    finally:
        await store.close()


async def test_every_option_present_with_zero(store: VoteStore) -> None:
    assert await store.tally() == {"docker": 0, "helm": 0, "kubernetes": 0, "prometheus": 0}
    assert list(await store.tally()) == sorted(OPTIONS)


async def test_one_vote_per_voter(store: VoteStore) -> None:
    assert await store.vote("alice", "docker") == {"docker": 1, "helm": 0, "kubernetes": 0, "prometheus": 0}
    assert (await store.vote("alice", "docker"))["docker"] == 1
    assert (await store.vote("bob", "docker"))["docker"] == 2
    assert await store.choice_of("alice") == "docker"
    assert await store.choice_of("carol") is None


async def test_new_vote_replaces_the_old_one(store: VoteStore, stored: RowReader) -> None:
    await store.vote("alice", "docker")
    assert await store.vote("alice", "helm") == {"docker": 0, "helm": 1, "kubernetes": 0, "prometheus": 0}
    assert await store.choice_of("alice") == "helm"
    assert await stored() == {"alice": "helm"}


async def test_revision_changes_only_when_a_count_changes(store: VoteStore) -> None:
    start = await store.revision()
    await store.vote("alice", "docker")
    first = await store.revision()
    assert first != start
    await store.vote("alice", "docker")  # the same choice again changes nothing
    assert await store.revision() == first
    await store.vote("alice", "helm")
    assert await store.revision() not in (start, first)


async def test_counts_equal_the_rows(store: VoteStore, stored: RowReader) -> None:
    rng = random.Random(5)
    last: dict[str, str] = {}
    for _ in range(300):
        voter, option = f"v{rng.randrange(60)}", rng.choice(OPTIONS)
        await store.vote(voter, option)
        last[voter] = option
    found = await stored()
    assert found == last
    assert await store.tally() == {option: Counter(found.values())[option] for option in sorted(OPTIONS)}


async def test_unknown_option_is_rejected_and_nothing_written(store: VoteStore, stored: RowReader) -> None:
    await store.vote("alice", "docker")
    revision = await store.revision()
    with pytest.raises(InvalidRequestError) as caught:
        await store.vote("alice", "emacs")
    assert caught.value.message == f"Unknown option 'emacs'; valid options: {', '.join(OPTIONS)}"
    with pytest.raises(InvalidRequestError):
        await store.vote("bob", "Docker")  # options are exact names
    assert await stored() == {"alice": "docker"}
    assert await store.revision() == revision


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ([], "at least one"),
        (["docker", "docker"], "duplicate"),
        (["Docker"], "invalid"),
        (["a b"], "invalid"),
        ("docker", "not one string"),
    ],
)
async def test_bad_option_lists_fail_at_start(open_store: Opener, options: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        open_store(options)


async def test_options_removed_from_the_config_are_not_reported(open_store: Opener) -> None:
    store = open_store(OPTIONS)
    await store.vote("alice", "helm")
    await store.close()
    store = open_store(["docker", "kubernetes"])
    try:
        assert await store.tally() == {"docker": 0, "kubernetes": 0}
        assert await store.choice_of("alice") is None
        assert await store.vote("alice", "docker") == {"docker": 1, "kubernetes": 0}
    finally:
        await store.close()


async def test_concurrent_voters_are_each_counted_once(open_store: Opener, stored: RowReader) -> None:
    # Two stores on one database (two LB instances), each voter voting through both at once.
    one, two = open_store(OPTIONS), open_store(OPTIONS)
    voters = [f"voter-{i}" for i in range(200)]

    async def vote_twice(i: int) -> None:
        # Concurrent first votes of one voter through both stores, then a change: only the change counts.
        first = OPTIONS[(i + 1) % 4]
        await asyncio.gather(one.vote(voters[i], first), two.vote(voters[i], first))
        await (one if i % 2 else two).vote(voters[i], OPTIONS[i % 4])

    try:
        for start in range(0, len(voters), 20):  # 20 voters at a time: 40 votes in flight
            await asyncio.gather(*(vote_twice(i) for i in range(start, start + 20)))
        assert await one.tally() == await two.tally() == {option: 50 for option in sorted(OPTIONS)}
    finally:
        await one.close()
        await two.close()
    assert await stored() == {voter: OPTIONS[i % 4] for i, voter in enumerate(voters)}


CHILD = """
import asyncio, sys
from pathlib import Path
from app.voting.sqlite_store import SqliteVoteStore

async def main() -> None:
    store = SqliteVoteStore(Path(sys.argv[1]), sys.argv[2].split(","))
    i = 0
    while True:
        await store.vote(f"voter-{i}", store.options[i % len(store.options)])
        print(i, flush=True)  # the acknowledgement: vote() has returned, so it is committed
        i += 1

asyncio.run(main())
"""


async def test_sqlite_acknowledged_votes_survive_sigkill(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), ",".join(OPTIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[int] = []
    try:
        while len(acked) < 50:
            line = proc.stdout.readline()
            assert line, f"the voting child died early: {proc.stderr.read()}"
            acked.append(int(line))
        # Killed while it is still voting: no chance to flush, close or checkpoint anything.
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        rest, _ = proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    # Acks the child printed after we stopped reading count too: each one followed a commit.
    acked += [int(line) for line in rest.split()]

    stored = rows(db_path)
    missing = [i for i in acked if stored.get(f"voter-{i}") != OPTIONS[i % 4]]
    assert not missing, f"acknowledged votes lost: {missing}"
    store = SqliteVoteStore(db_path, OPTIONS)
    try:
        assert sum((await store.tally()).values()) >= len(acked)
        assert await store.choice_of(f"voter-{acked[-1]}") == OPTIONS[acked[-1] % 4]
    finally:
        await store.close()
