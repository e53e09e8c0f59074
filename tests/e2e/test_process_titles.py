"""Replica processes are named in ps (setproctitle rewrites argv): `chlb replica <name>`, the fork server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.runtimes.process import EXEC_REPLICA, ProcessRuntime
from tests.e2e.test_process_runtime import wait_serving
from tests.lb_support import LBFactory, descendants, replica_pids


def title(pid: int) -> str:
    """What ps shows for `pid`: its argv from /proc, arguments joined by spaces, padding dropped."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return " ".join(arg.decode() for arg in argv if arg)


def test_each_replica_and_the_fork_server_are_titled(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="3")
    pids = replica_pids(lb)
    assert {name: title(pid) for name, pid in pids.items()} == {
        name: f"chlb replica {name}" for name in ("Server 1", "Server 2", "Server 3")
    }
    others = descendants(lb.proc.pid) - set(pids.values())
    assert "chlb fork server" in {title(pid) for pid in others}

    # /add under a chosen name (spaces and all): forked from the same server, titled by that name.
    lb.client.post("/add", json={"n": 1, "hostnames": ["night owl 7"]}).raise_for_status()
    added = replica_pids(lb)["night owl 7"]
    assert title(added) == "chlb replica night owl 7"
    # Titles rewrite argv only: the environment the replicas inherited is still readable.
    assert b"CHLB_FORKSERVER_TMP=" in Path(f"/proc/{added}/environ").read_bytes()


@pytest.mark.anyio
@pytest.mark.parametrize("command", [None, EXEC_REPLICA], ids=["forked", "exec"])
async def test_a_replica_is_titled_with_or_without_the_fork_server(command: list[str] | None) -> None:
    runtime = ProcessRuntime(command=command)
    try:
        handle = await runtime.start("Server 9")
        await asyncio.wait_for(wait_serving(handle), timeout=30)
        assert handle.pid is not None
        assert title(handle.pid) == "chlb replica Server 9"
        environ = Path(f"/proc/{handle.pid}/environ").read_bytes().split(b"\0")
        assert any(b"=" in entry for entry in environ)  # the title took argv's memory, not the environment's
    finally:
        await runtime.close()
