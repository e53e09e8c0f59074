"""Stopping the LB stops every replica it started: SIGTERM, Ctrl-C (SIGINT) and even SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

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


def test_under_uvicorns_cli_a_stopped_lb_leaves_no_temporary_directory(tmp_path: Path) -> None:
    # uvicorn's CLI ends the process with the SIGTERM that stopped it, skipping Python's exit handlers:
    # multiprocessing's folder for the fork server is then removed by the fork server itself.
    temp = tmp_path / "temp"
    temp.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(TMPDIR=str(temp), LB_REPLICAS="1", LB_DB_PATH=str(tmp_path / "votes.sqlite3"))
    argv = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--port", str(port)]
    with (tmp_path / "uvicorn.log").open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: serves(port), timeout=60, interval=0.05)
        assert [p.name[:5] for p in temp.iterdir()] == ["pymp-"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM  # what uvicorn's CLI does
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: list(temp.iterdir()) == [], timeout=5)


def serves(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/rep", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
