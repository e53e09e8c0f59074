"""Votes in PostgreSQL (LB_VOTES_URL) through real LBs: shared by instances, and a database outage.

Every server here is on loopback: the LBs, their replicas and a throw-away PostgreSQL cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from app.voting.postgres_store import UNAVAILABLE
from tests.lb_support import LBFactory, RunningLB
from tests.load import VOTE_OPTIONS, Load, VoteLoad
from tests.polling import wait_until
from tests.postgres_support import PgCluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OPTIONS = list(VOTE_OPTIONS)
VOTERS = 100


def vote(lb: RunningLB, voter: str, option: str) -> httpx.Response:
    return lb.client.post("/api/vote", json={"option": option}, headers={"X-Voter-Id": voter})


def test_two_lbs_on_one_database_show_the_same_counts(lb_factory: LBFactory, postgres_url: str) -> None:
    a = lb_factory(replicas="0", votes_url=postgres_url)
    b = lb_factory(replicas="0", votes_url=postgres_url)
    assert f"votes: PostgreSQL at 127.0.0.1:{postgres_url.split(':')[-1]}" in a.log()
    voters = [f"voter-{i}" for i in range(VOTERS)]
    for voter in voters:
        assert vote(a, voter, "docker").status_code == 200
    first = {**dict.fromkeys(sorted(OPTIONS), 0), "docker": VOTERS}
    assert a.client.get("/api/votes").json() == b.client.get("/api/votes").json() == first
    for voter in voters:  # the same voters change their vote through the other instance
        response = vote(b, voter, "helm")
        assert response.status_code == 200, response.text
    then = {**dict.fromkeys(sorted(OPTIONS), 0), "helm": VOTERS}
    assert a.client.get("/api/votes").json() == b.client.get("/api/votes").json() == then
    # The ETag is the database's: a poller of one instance sees a vote made through the other.
    tag = a.client.get("/api/votes").headers["etag"]
    assert b.client.get("/api/votes", headers={"If-None-Match": tag}).status_code == 304
    assert vote(b, "newcomer", "docker").status_code == 200
    assert a.client.get("/api/votes", headers={"If-None-Match": tag}).status_code == 200


def test_lb_starts_with_the_database_down_and_votes_once_it_is_up(lb_factory: LBFactory) -> None:
    cluster = PgCluster.create()
    try:
        cluster.stop()
        lb = lb_factory(replicas="1", votes_url=cluster.url())
        assert lb.client.get("/home", params={"id": "1"}).status_code == 200  # proxying is unaffected
        assert lb.client.get("/healthz").status_code == 200
        refused = vote(lb, "alice", "docker")
        assert refused.status_code == 503
        assert refused.json() == {"message": f"<Error> {UNAVAILABLE}", "status": "failure"}
        assert "\n" not in refused.json()["message"]
        assert lb.client.get("/api/votes").status_code == 503
        assert "vote database 127.0.0.1" in lb.log() and "unreachable" in lb.log()
        cluster.start()
        wait_until(lambda: vote(lb, "alice", "docker").status_code == 200, timeout=10, interval=0.1)
        assert lb.client.get("/api/votes").json()["docker"] == 1
    finally:
        cluster.destroy()


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster this test may stop and start (the session's is shared)."""
    cluster = PgCluster.create()
    yield cluster
    cluster.destroy()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_database_stopped_under_vote_load(lb_factory: LBFactory, own_cluster: PgCluster, mode: str) -> None:
    lb = lb_factory(replicas="2", votes_url=own_cluster.url())
    with VoteLoad(lb.url, max_seconds=90.0) as votes, Load(lb.url, workers=2) as pages:
        wait_until(lambda: votes.count(200) >= 200, timeout=30)
        pages.wait_for(100)
        own_cluster.stop(mode)  # fast: clients disconnected cleanly; immediate: as if it crashed
        wait_until(lambda: votes.count(503) >= 50, timeout=30)
        pages.wait_for(100)
        assert lb.client.get("/healthz").status_code == 200
        own_cluster.start()
        back = votes.count(200)
        wait_until(lambda: votes.count(200) >= back + 200, timeout=30)
        pages.wait_for(100)
    assert votes.errors == [], votes.errors[:3]  # never a dropped connection
    assert set(votes.statuses) == {200, 503}, votes.statuses  # never a 500
    assert votes.bodies == {f'{{"message":"<Error> {UNAVAILABLE}","status":"failure"}}'}
    assert pages.errors == [] and set(pages.statuses) == {200}, (pages.errors[:3], pages.statuses)
    # Every acknowledged vote is in the database after the restart.
    stored = dict(line.split("|") for line in own_cluster.sql("SELECT voter_id, option FROM votes").split())
    missing = {voter for voter, option in votes.acked.items() if stored.get(voter) != option}
    assert not missing, f"{len(missing)} acknowledged votes lost, e.g. {sorted(missing)[:5]}"
    counts = lb.client.get("/api/votes").json()
    assert sum(counts.values()) == len(stored) >= len(votes.acked)
