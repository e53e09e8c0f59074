"""Stopping the LB stops every replica it started: SIGTERM, Ctrl-C (SIGINT) and even SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.main import NOT_SERVED
from tests.lb_support import ROOT, LBFactory, alive, descendants, replica_pids, wait_until
from tests.ports import free_port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_no_replica_process_outlives_the_lb(lb_factory: LBFactory, sig: int) -> None:
    lb = lb_factory(replicas="3")
    lb.client.post("/add", json={"n": 1, "hostnames": ["extra"]}).raise_for_status()
    replicas = set(replica_pids(lb).values())
    assert len(replicas) == 4
    everything = descendants(lb.proc.pid)  # replicas plus the fork server and its helper
    assert replicas <= everything and all(alive(pid) for pid in everything)
    (tmp,) = {fork_server_tmp(pid) for pid in replicas}  # multiprocessing's folder, for the fork server
    assert tmp is not None and tmp.is_dir()
    lb.stop(sig)
    wait_until(lambda: not any(alive(pid) for pid in everything), timeout=10)
    wait_until(lambda: not tmp.exists(), timeout=5)  # nothing left behind, even after SIGKILL


def fork_server_tmp(pid: int) -> Path | None:
    """The folder the LB named to its fork server (inherited by every replica forked from it)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"CHLB_FORKSERVER_TMP=")]
    return Path(values[0].decode()) if values else None


def test_an_lb_killed_as_soon_as_it_serves_leaves_no_temporary_directory(lb_factory: LBFactory) -> None:
    # No replica to wait for: the fork server may still be importing FastAPI when its LB dies.
    lb = lb_factory(replicas="0")
    (tmp,) = {fork_server_tmp(pid) for pid in descendants(lb.proc.pid)} - {None}
    assert tmp is not None and tmp.is_dir()
    lb.stop(signal.SIGKILL)
    wait_until(lambda: not tmp.exists(), timeout=5)


def test_removed_replica_process_is_stopped(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    gone = replica_pids(lb)["Server 2"]
    lb.client.request("DELETE", "/rm", json={"n": 1, "hostnames": ["Server 2"]}).raise_for_status()
    assert set(replica_pids(lb)) == {"Server 1"}
    wait_until(lambda: not alive(gone), timeout=5)


def test_uvicorns_cli_is_refused_with_one_line_naming_the_launch_to_use(tmp_path: Path) -> None:
    # uvicorn's CLI would serve proxied paths with its own protocol, without the data plane: no streaming,
    # limits or WebSocket tunnel. It must not start (nor start replicas), and must say what to run instead.
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(TMPDIR=str(temp), LB_REPLICAS="1", LB_DB_PATH=str(tmp_path / "votes.sqlite3"))
    argv = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(free_port())]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 3, output  # uvicorn's status for a failed start-up
    assert NOT_SERVED in output and "python -m app" in NOT_SERVED
    assert "Traceback" not in output
    assert list(temp.iterdir()) == []  # no fork server, so no replica, was started
