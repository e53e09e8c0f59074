"""Votes acknowledged by the real LB survive a SIGKILL of the LB and a restart."""

from __future__ import annotations

import signal

from tests.lb_support import LBFactory


def test_acknowledged_votes_survive_sigkill(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="0")
    options = ["kubernetes", "docker", "helm", "prometheus"]
    acked: dict[str, str] = {}
    for i in range(60):
        voter, option = f"voter-{i}", options[i % 4]
        response = lb.client.post("/api/vote", json={"option": option}, headers={"X-Voter-Id": voter})
        assert response.status_code == 200, response.text
        acked[voter] = option
    lb.stop(signal.SIGKILL)

    again = lb_factory(replicas="0")
    expected = {option: sum(1 for o in acked.values() if o == option) for option in options}
    assert again.client.get("/api/votes").json() == expected
