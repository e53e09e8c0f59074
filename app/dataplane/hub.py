"""LB_WORKERS=N: the owner process keeps replicas and health; N-1 worker processes serve the same port.

HAProxy's master-worker model: the owner (this process, the only one with a control plane) pushes every
routing-table swap to the workers over a private unix socket; workers serve and never decide: a failed
connection to a replica is reported back to the owner, whose pool takes the decision and pushes the
result. The LB's own paths (/add, /rep, /status, ...) reach the owner from any worker through a private
loopback listener, so every worker gives the same answers.

The owner watches its workers (a pidfd per process: no polling) and restarts one that dies, after the
replicas' back-off when it keeps dying. Workers send their request counters now and then; /metrics and
/status add them to the owner's (app.metrics.WorkerStats). Every table has a version that each worker
acknowledges once it is swapped in, naming the replicas it dropped while requests to them were still in
flight and, later, when each of those is done: a removed replica stops only after every process has
finished with it (or the drain timeout).

Messages are length-prefixed pickles between processes of the same LB, over a socket in a private
(0700) directory: rings are plain Python objects, and pickling them guarantees identical routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.control.membership import Membership
from app.control.routing import RoutingTable
from app.dataplane.front import ReservedPaths
from app.exits import watch_exit
from app.lifeline import die_with_parent
from app.metrics import WorkerStats

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
WORKER_COMMAND = (sys.executable, "-m", "app.dataplane.worker")
STABLE_SECONDS = 10.0  # a worker that ran this long before dying is restarted after the shortest back-off
DRAIN_POLL = 0.02  # seconds between looks at the workers while a removed replica drains


async def read_message(reader: asyncio.StreamReader) -> Any:
    """One length-prefixed pickle (IncompleteReadError at EOF)."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


def encode_message(message: Any) -> bytes:
    """Length prefix + pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def table_message(table: RoutingTable, version: int) -> bytes:
    """The routing table as workers rebuild it: its version, the ring, and each member's address."""
    members = [(name, upstream.address) for name, upstream in table.upstreams.items()]
    return encode_message(("table", version, table.ring, members))


def describe_exit(code: int) -> str:
    """`exited with code 3`, `was killed by SIGKILL`: a Popen return code in words."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


@dataclass(eq=False)
class WorkerProcess:
    """Worker `index` (1..N-1): its current process (None while it waits to be restarted) and its history."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic time of the current process's start
    restarts: int = 0
    quick_exits: int = 0  # exits in a row, each before STABLE_SECONDS: the back-off grows with them
    unwatch: Callable[[], None] | None = None
    pending: asyncio.TimerHandle | None = None  # the restart waiting out its back-off

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


@dataclass(eq=False)
class WorkerLink:
    """What the owner knows of one connected worker's routing: for draining removed replicas."""

    applied: int = 0  # the last table version the worker has swapped in
    draining: set[str] = field(default_factory=set)  # dropped replicas with its requests still in flight


class WorkerHub:
    """Starts the worker processes and restarts those that die; pushes routing; takes reports and counters."""

    def __init__(
        self,
        pool: Membership,
        count: int,
        owner_address: str,
        fd: int | None = None,
        *,
        port: int | None = None,
        tls_port: int | None = None,
        backoff: Callable[[int], float],
        reserved: ReservedPaths | None = None,
        command: Sequence[str] = WORKER_COMMAND,
        settings: Settings | None = None,
    ) -> None:
        self.pool = pool
        self.fd = fd  # LB_FD: an inherited listening socket, passed on to every worker
        self.port = port  # else the port the owner bound (LB_PORT=0 picks one: the workers take the same)
        self.tls_port = tls_port  # the same for LB_TLS_PORT
        self.count = count
        self.owner_address = owner_address
        self.backoff = backoff  # quick exits in a row -> seconds before the next start
        # The LB's own paths, which workers forward to the owner: the owner's app decides what they are.
        self.reserved = reserved or ReservedPaths(())
        self.command = list(command)
        self.stats = WorkerStats()
        self.workers = [WorkerProcess(index) for index in range(1, count)]
        self._dir = Path(tempfile.mkdtemp(prefix="chlb-workers-"))
        self._path = self._dir / "control.sock"
        self._links: dict[asyncio.StreamWriter, WorkerLink] = {}
        self._version = 0  # of the routing table, counted up on every push
        self._server: asyncio.AbstractServer | None = None
        self._stopping = False
        # The owner's settings in force: every worker starts with them (workers read no environment or
        # settings file of their own) and takes each reload's. Tests of the protocol may leave them out.
        self._settings = settings
        self._waits: set[asyncio.Task[int]] = set()  # where there is no pidfd: a thread waits per process

    @property
    def control_path(self) -> Path:
        """The unix socket workers connect to."""
        return self._path

    async def start(self) -> None:
        """Listen for workers, subscribe to routing changes, start the worker processes."""
        os.chmod(self._dir, 0o700)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self._path))
        self.pool.subscribe(self._push)
        self.pool.drain_waiter = self.wait_drained
        for worker in self.workers:
            self._spawn(worker)
        logger.info("started %d data-plane worker processes", self.count - 1)

    def _spawn(self, worker: WorkerProcess) -> None:
        """Start worker's process and watch for its exit. Runs on the loop's thread: die_with_parent
        ties the child to the thread that forks it."""
        worker.pending = None
        argv = [*self.command, "--control", str(self._path), "--owner", self.owner_address]
        argv += ["--index", str(worker.index)]
        if self.port is not None:
            argv += ["--port", str(self.port)]
        if self.tls_port is not None:
            argv += ["--tls-port", str(self.tls_port)]
        proc = subprocess.Popen(
            argv,
            pass_fds=(self.fd,) if self.fd is not None else (),
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - must run in the child
        )
        worker.proc, worker.started = proc, time.monotonic()
        worker.unwatch = watch_exit(proc.pid, lambda: self._exited(worker, proc))
        if worker.unwatch is None:  # no pidfd: a thread blocks in waitpid instead
            wait = asyncio.get_running_loop().create_task(asyncio.to_thread(proc.wait))
            self._waits.add(wait)
            wait.add_done_callback(self._waits.discard)
            wait.add_done_callback(lambda _: self._exited(worker, proc))

    def _exited(self, worker: WorkerProcess, proc: subprocess.Popen[bytes]) -> None:
        """A worker's process ended: unless the LB is stopping, start it again after its back-off."""
        if self._stopping or worker.proc is not proc:
            return
        code = proc.wait()  # already exited: this only reaps it
        worker.proc = worker.unwatch = None
        stable = time.monotonic() - worker.started >= STABLE_SECONDS
        worker.quick_exits = 1 if stable else worker.quick_exits + 1
        delay = self.backoff(worker.quick_exits)
        worker.restarts += 1
        logger.warning(
            "data-plane worker %d (pid %d) %s; restarting it in %.1f s (restart %d)",
            worker.index,
            proc.pid,
            describe_exit(code),
            delay,
            worker.restarts,
        )
        worker.pending = asyncio.get_running_loop().call_later(delay, self._restart, worker)

    def _restart(self, worker: WorkerProcess) -> None:
        try:
            self._spawn(worker)
        except OSError as exc:  # e.g. out of processes: try again later, as after a quick exit
            worker.quick_exits += 1
            delay = self.backoff(worker.quick_exits)
            logger.warning(
                "data-plane worker %d: cannot start (%s); retrying in %.1f s", worker.index, exc, delay
            )
            worker.pending = asyncio.get_running_loop().call_later(delay, self._restart, worker)

    async def stop(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL) and the control socket; restart nothing from now on."""
        self._stopping = True
        procs = []
        for worker in self.workers:
            if worker.pending is not None:
                worker.pending.cancel()
            if worker.unwatch is not None:
                worker.unwatch()
            if worker.proc is not None:
                procs.append(worker.proc)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for writer in list(self._links):
            writer.close()
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def wait_drained(self, name: str, deadline: float) -> int:
        """Until every worker has swapped in the current table and finished its requests to `name` (or
        the monotonic deadline); returns how many workers still had some. A worker that dies stops counting.
        """
        version = self._version  # the table without `name` went out before the drain started

        def busy() -> int:
            return sum(link.applied < version or name in link.draining for link in self._links.values())

        while busy() and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        return busy()

    def send_settings(self, settings: Settings) -> None:
        """A reload: every worker applies the live settings of `settings`; workers started later too."""
        self._settings = settings
        message = encode_message(("settings", settings))
        for writer in self._links:
            writer.write(message)

    def _push(self, table: RoutingTable) -> None:
        """Called by the pool after every routing-table swap, before anything else runs."""
        self._version += 1
        if self._links:
            message = table_message(table, self._version)
            for writer in self._links:
                writer.write(message)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._settings is not None:  # first: a worker is configured by the owner's settings in force
            writer.write(encode_message(("settings", self._settings)))
        writer.write(encode_message(("paths", sorted(self.reserved.exact), list(self.reserved.prefixes))))
        writer.write(table_message(self.pool.table, self._version))
        link = self._links[writer] = WorkerLink()
        pid: int | None = None  # the worker on this connection, once it sent its counters
        try:
            while True:
                message = await read_message(reader)
                if message[0] == "applied":  # a table swapped in; still busy with the replicas it dropped
                    _, link.applied, busy = message
                    link.draining.update(busy)
                elif message[0] == "drained":
                    link.draining.discard(message[1])
                elif message[0] == "failure":
                    _, name, reason = message
                    self.pool.report_failure(name, f"{reason} (seen by a worker)")
                elif message[0] == "stats":
                    _, pid, snapshot = message
                    self.stats.update(pid, snapshot)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if pid is not None:
                self.stats.retire(pid)  # its counts stay in the totals
            del self._links[writer]
            with contextlib.suppress(ConnectionError):
                writer.close()
