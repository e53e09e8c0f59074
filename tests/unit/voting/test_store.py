"""VoteStore: one vote per voter, counts derived from rows, thread safety, and durability under SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.errors import InvalidRequestError
from app.voting.store import VoteStore

OPTIONS = ("kubernetes", "docker", "helm", "prometheus")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "votes.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[VoteStore]:
    store = VoteStore(db_path, OPTIONS)
    yield store
    store.close()


def rows(db_path: Path) -> dict[str, str]:
    """The voter -> option rows, read through a connection of our own (not the store's)."""
    with sqlite3.connect(db_path) as conn:
        result = dict(conn.execute("SELECT voter_id, option FROM votes").fetchall())
    conn.close()
    return result


def test_creates_parent_directory_and_uses_wal(store: VoteStore, db_path: Path) -> None:
    assert db_path.is_file()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_every_option_present_with_zero(store: VoteStore) -> None:
    assert store.tally() == {"docker": 0, "helm": 0, "kubernetes": 0, "prometheus": 0}
    assert list(store.tally()) == sorted(OPTIONS)


def test_one_vote_per_voter(store: VoteStore) -> None:
    assert store.vote("alice", "docker") == {"docker": 1, "helm": 0, "kubernetes": 0, "prometheus": 0}
    assert store.vote("alice", "docker")["docker"] == 1
    assert store.vote("bob", "docker")["docker"] == 2
    assert store.choice_of("alice") == "docker"
    assert store.choice_of("carol") is None


def test_new_vote_replaces_the_old_one(store: VoteStore, db_path: Path) -> None:
    store.vote("alice", "docker")
    assert store.vote("alice", "helm") == {"docker": 0, "helm": 1, "kubernetes": 0, "prometheus": 0}
    assert store.choice_of("alice") == "helm"
    assert rows(db_path) == {"alice": "helm"}


def test_version_grows_only_when_a_count_changes(store: VoteStore) -> None:
    start = store.version
    store.vote("alice", "docker")
    assert store.version == start + 1
    store.vote("alice", "docker")  # the same choice again changes nothing
    assert store.version == start + 1
    store.vote("alice", "helm")
    assert store.version == start + 2


def test_counts_equal_the_rows(store: VoteStore, db_path: Path) -> None:
    rng = random.Random(5)
    last: dict[str, str] = {}
    for _ in range(300):
        voter, option = f"v{rng.randrange(60)}", rng.choice(OPTIONS)
        store.vote(voter, option)
        last[voter] = option
    stored = rows(db_path)
    assert stored == last
    assert store.tally() == {option: Counter(stored.values())[option] for option in sorted(OPTIONS)}


def test_unknown_option_is_rejected_and_nothing_written(store: VoteStore, db_path: Path) -> None:
    store.vote("alice", "docker")
    version = store.version
    with pytest.raises(InvalidRequestError) as caught:
        store.vote("alice", "emacs")
    assert caught.value.message == f"Unknown option 'emacs'; valid options: {', '.join(OPTIONS)}"
    with pytest.raises(InvalidRequestError):
        store.vote("bob", "Docker")  # options are exact names
    assert rows(db_path) == {"alice": "docker"}
    assert store.version == version


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
def test_bad_option_lists_fail_at_start(db_path: Path, options: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        VoteStore(db_path, options)


def test_options_removed_from_the_config_are_not_reported(db_path: Path) -> None:
    store = VoteStore(db_path, OPTIONS)
    store.vote("alice", "helm")
    store.close()
    store = VoteStore(db_path, ["docker", "kubernetes"])
    try:
        assert store.tally() == {"docker": 0, "kubernetes": 0}
        assert store.choice_of("alice") is None
        assert store.vote("alice", "docker") == {"docker": 1, "kubernetes": 0}
    finally:
        store.close()


def test_concurrent_voters_are_each_counted_once(store: VoteStore, db_path: Path) -> None:
    voters = [f"voter-{i}" for i in range(200)]

    def vote_twice(i: int) -> None:
        # A first vote, then a change: only the second may count.
        store.vote(voters[i], OPTIONS[(i + 1) % 4])
        store.vote(voters[i], OPTIONS[i % 4])

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(vote_twice, range(len(voters))))

    assert store.tally() == {option: 50 for option in sorted(OPTIONS)}
    assert rows(db_path) == {voter: OPTIONS[i % 4] for i, voter in enumerate(voters)}


CHILD = """
import sys
from pathlib import Path
from app.voting.store import VoteStore

store = VoteStore(Path(sys.argv[1]), sys.argv[2].split(","))
i = 0
while True:
    store.vote(f"voter-{i}", store.options[i % len(store.options)])
    print(i, flush=True)  # the acknowledgement: vote() has returned, so it is committed
    i += 1
"""


def test_acknowledged_votes_survive_sigkill(db_path: Path) -> None:
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
    store = VoteStore(db_path, OPTIONS)
    try:
        assert sum(store.tally().values()) >= len(acked)
        assert store.choice_of(f"voter-{acked[-1]}") == OPTIONS[acked[-1] % 4]
    finally:
        store.close()
