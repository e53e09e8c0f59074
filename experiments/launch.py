"""Start the real load balancer (`python -m app`) on a free loopback port, and find its replica processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the LB binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalLB:
    """An LB process we started: its URL, process and log file."""

    strategy: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    hashseed: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /rep until it answers 200; raise with the log if the LB exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LB exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/rep", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"LB on {self.url} not ready within {timeout:g}s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (the LB stops its replicas), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch_lb(
    strategy: str,
    replicas: int,
    workdir: Path,
    *,
    hashseed: str = "1",
    settings: Mapping[str, str] | None = None,
) -> LocalLB:
    """Start `python -m app` with the given strategy and replica count; returns before it is ready.

    PYTHONHASHSEED is fixed (it only matters to the `builtin` strategy) so a run can be repeated.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(
        LB_HOST="127.0.0.1",
        LB_PORT=str(port),
        LB_STRATEGY=strategy,
        LB_REPLICAS=str(replicas),
        LB_RUNTIME="process",
        LB_DB_PATH=str(workdir / f"votes-{port}.sqlite3"),
        LB_LOG_LEVEL="info",
        PYTHONHASHSEED=hashseed,
    )
    env.update({f"LB_{k.upper()}": v for k, v in (settings or {}).items()})
    log_path = workdir / f"lb-{strategy}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return LocalLB(strategy, port, proc, log_path, hashseed)


@contextmanager
def running_lb(
    strategy: str,
    replicas: int,
    workdir: Path,
    *,
    hashseed: str = "1",
    settings: Mapping[str, str] | None = None,
) -> Iterator[LocalLB]:
    """An LB that is ready inside the block and stopped after it."""
    lb = launch_lb(strategy, replicas, workdir, hashseed=hashseed, settings=settings)
    try:
        lb.wait_ready()
        yield lb
    finally:
        lb.stop()
