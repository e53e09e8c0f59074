"""LB_WORKERS=N: the owner process keeps replicas and health; N-1 worker processes serve the same port.

HAProxy's master-worker model: the owner (this process, the only one with a control plane) pushes every
routing-table swap to the workers over a private unix socket; workers serve and never decide: a failed
connection to a replica is reported back to the owner, whose pool takes the decision and pushes the
result. The LB's own paths (/add, /rep, /status, ...) reach the owner from any worker through a private
loopback listener, so every worker gives the same answers.

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
from pathlib import Path
from typing import Any

from app.control.membership import Membership
from app.control.routing import RoutingTable
from replica_service.lifeline import die_with_parent

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")


async def read_message(reader: asyncio.StreamReader) -> Any:
    """One length-prefixed pickle (IncompleteReadError at EOF)."""
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(size))


def encode_message(message: Any) -> bytes:
    """Length prefix + pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def table_message(table: RoutingTable) -> bytes:
    """The routing table as workers rebuild it: the ring, and each member's address."""
    members = [(name, upstream.address) for name, upstream in table.upstreams.items()]
    return encode_message(("table", table.ring, members))


class WorkerHub:
    """Starts the worker processes, pushes routing to them, takes their failure reports."""

    def __init__(self, pool: Membership, count: int, owner_address: str, fd: int | None = None) -> None:
        self.pool = pool
        self.fd = fd  # LB_FD: an inherited listening socket, passed on to every worker
        self.count = count
        self.owner_address = owner_address
        self._dir = Path(tempfile.mkdtemp(prefix="chlb-workers-"))
        self._path = self._dir / "control.sock"
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        """Listen for workers, subscribe to routing changes, start the worker processes."""
        os.chmod(self._dir, 0o700)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self._path))
        self.pool.subscribe(self._push)
        for index in range(1, self.count):
            argv = [sys.executable, "-m", "app.dataplane.worker"]
            argv += ["--control", str(self._path), "--owner", self.owner_address, "--index", str(index)]
            self._procs.append(
                subprocess.Popen(
                    argv,
                    pass_fds=(self.fd,) if self.fd is not None else (),
                    start_new_session=True,
                    preexec_fn=die_with_parent,  # noqa: PLW1509 - must run in the child
                )
            )
        logger.info("started %d data-plane worker processes", self.count - 1)

    async def stop(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL) and the control socket."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs:
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _push(self, table: RoutingTable) -> None:
        """Called by the pool after every routing-table swap, before anything else runs."""
        if self._writers:
            message = table_message(table)
            for writer in self._writers:
                writer.write(message)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(table_message(self.pool.table))
        self._writers.add(writer)
        try:
            while True:
                kind, name, reason = await read_message(reader)
                if kind == "failure":
                    self.pool.report_failure(name, f"{reason} (seen by a worker)")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(ConnectionError):
                writer.close()
