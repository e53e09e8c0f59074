"""The LB says whether its hot path runs compiled, and serves the contract either way."""

from __future__ import annotations

import pytest

from app import native
from tests.lb_support import LBFactory, RunningLB


def served_by_every_replica(lb: RunningLB) -> set[str]:
    """The contract's /home through the LB, for keys spread over the ring."""
    messages = set()
    for key in range(60):
        response = lb.client.get("/home", params={"id": key})
        assert response.status_code == 200
        assert response.json()["status"] == "successful"
        messages.add(response.json()["message"])
    return messages


@pytest.mark.parametrize("compiled", ["true", "false"])
def test_status_and_log_say_how_the_hot_path_runs(lb_factory: LBFactory, compiled: str) -> None:
    built, reason = native.check(native.BUILD_DIR)
    lb = lb_factory(replicas="3", compiled=compiled)
    expect_compiled = compiled == "true" and bool(built)
    assert lb.client.get("/status").json()["compiled"] is expect_compiled
    if expect_compiled:
        assert f"hot path compiled with mypyc ({len(native.MODULES)} modules" in lb.log()
    elif compiled == "false":
        assert "INFO app.launch: hot path runs as Python source: LB_COMPILED=false" in lb.log()
    else:
        level = "INFO" if reason == native.NOT_BUILT else "WARNING"  # a first run is no trouble
        assert f"{level} app.launch: hot path runs as Python source: {reason}" in lb.log()
    mode = "compiled" if expect_compiled else "Python source"
    assert f"proxying to the replicas through the data plane (hot path: {mode})" in lb.log()
    assert len(served_by_every_replica(lb)) == 3
