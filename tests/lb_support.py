"""Run the real load balancer (`python -m app`) as a child process on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tests.polling import wait_until
from tests.ports import bind_loopback, port_of

__all__ = ["LBFactory", "RunningLB", "start_lb", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE = 60.0
FRESH = 40  # new connections per check: the kernel spreads them over the LB's processes


def child_pids(pid: int) -> set[int]:
    """Direct children of `pid`, from /proc (no psutil needed)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class RunningLB:
    """A started LB: its URL, process and a client bound to it."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]
    client: httpx.Client = field(init=False)
    runtime: Any = None  # the tests.runtimes.RuntimeUnderTest the LB runs on (names to expect)

    def __post_init__(self) -> None:
        # Several processes: a new connection per request, so a test's checks reach all of them.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=0 if self.workers > 1 else 20)
        self.client = httpx.Client(base_url=self.url, timeout=10.0, limits=limits)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def workers(self) -> int:
        """LB_WORKERS: how many processes serve the port."""
        return int(self.env.get("LB_WORKERS", "1"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def replicas(self) -> list[str]:
        body = self.client.get("/rep").json()
        names: list[str] = body["message"]["replicas"]
        return names

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.client.get("/status").json()["replicas"]}

    def serving(self, key: str) -> str:
        """The replica that answers /home for `key` (parsed as existing clients do)."""
        response = self.client.get("/home", params={"id": key})
        assert response.status_code == 200, response.text
        message: str = response.json()["message"]
        return message.split(":")[-1].strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_lb(workdir: Path, **settings: Any) -> RunningLB:
    """Start `python -m app` with LB_* settings (lower-case keys) and wait until /rep answers."""
    sock = bind_loopback()  # handed to the LB: no window in which another process takes the port
    port = port_of(sock)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(
        LB_HOST="127.0.0.1",
        LB_PORT=str(port),
        LB_FD=str(sock.fileno()),
        LB_DB_PATH=str(workdir / "votes.sqlite3"),
        LB_HEARTBEAT_INTERVAL="0.05",
        LB_LOG_LEVEL="info",
    )
    for key, value in settings.items():
        env[f"LB_{key.upper()}"] = value if isinstance(value, str) else _json(value)
    log_path = workdir / f"lb-{port}.log"
    with sock, log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
        )
    lb = RunningLB(port, proc, log_path, env)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"LB exited with {proc.returncode}:\n{lb.log()}")
        try:
            return httpx.get(f"{lb.url}/rep", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=START_DEADLINE, interval=0.05)
    if lb.workers > 1:
        wait_until(lambda: len(worker_pids(lb)) == lb.workers - 1, timeout=START_DEADLINE)
        for worker in worker_pids(lb):
            wait_until(partial(served_by, lb, worker), timeout=START_DEADLINE)
    return lb


def worker_pids(lb: RunningLB) -> list[int]:
    """The LB's data-plane worker processes (LB_WORKERS > 1; not its replicas)."""
    pids = []
    for pid in descendants(lb.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"app.dataplane.worker" in cmdline:
            pids.append(pid)
    return pids


def fresh_get(lb: RunningLB, path: str, **params: str) -> httpx.Response:
    """One request on a new connection (which may land on any of the LB's processes)."""
    return httpx.get(f"{lb.url}{path}", params=params, timeout=10, headers={"connection": "close"})


def served_by(lb: RunningLB, worker: int) -> bool:
    """Whether `worker` takes part: its CPU time grows while fresh connections come in."""
    before = cpu_seconds(worker)
    for _ in range(FRESH):
        assert fresh_get(lb, "/healthz").status_code == 200
    return cpu_seconds(worker) > before


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


@dataclass
class LBFactory:
    """Starts LBs for one test and stops them all afterwards."""

    workdir: Path
    started: list[RunningLB] = field(default_factory=list)

    def __call__(self, **settings: Any) -> RunningLB:
        lb = start_lb(self.workdir, **settings)
        self.started.append(lb)
        return lb

    def close(self) -> None:
        for lb in self.started:
            lb.stop()


def replica_pids(lb: RunningLB) -> dict[str, int]:
    """Replica name -> pid, as the LB reports it in /status (replicas are forked, not exec'd)."""
    return {name: row["pid"] for name, row in lb.status().items() if row.get("pid")}


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (replicas, the fork server), from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_command() -> list[str]:
    """LB_REPLICA_COMMAND for replicas that echo the request (tests/echo_replica.py)."""
    return [sys.executable, "-m", "tests.echo_replica", "--fd", "{fd}"]


@contextmanager
def echo_lb(workdir: Path, **settings: Any) -> Iterator[RunningLB]:
    """An LB over two replicas that echo requests (tests/echo_replica.py), stopped when the block ends."""
    lb = start_lb(workdir, **{"replicas": "2", "replica_command": echo_command(), **settings})
    try:
        yield lb
    finally:
        lb.stop()
