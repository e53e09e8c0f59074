"""Replicas as local child processes: the embedded default, so `make run` needs no Docker.

The LB binds each replica's listening socket itself and hands it to the child (uvicorn --fd), so
there is no window in which another process can take the port between choosing and using it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from typing import Protocol

from app.errors import InvalidRequestError, ReplicaStartError, quote
from app.exits import watch_exit
from app.lifeline import die_with_parent
from app.runtimes.base import ReplicaHandle
from app.runtimes.forkserver import ForkedReplica, main_is_reimportable, start_fork_server

logger = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 3.0


class ChildProcess(Protocol):
    """What the runtime needs of a child: subprocess.Popen has it, ForkedReplica adapts to it."""

    pid: int

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(eq=False)
class ProcessHandle(ReplicaHandle):
    """A replica process: reached on its loopback port, stopped through its process object."""

    process: ChildProcess | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def child(self) -> ChildProcess:
        assert self.process is not None, "a ProcessHandle is always made with its process"
        return self.process


# The fork server's replica, exec'd: the same app, and titled `chlb replica <name>` in ps likewise.
EXEC_REPLICA = [sys.executable, "-m", "app.runtimes.forkserver", "--fd", "{fd}"]


class ProcessRuntime:
    """Starts `replica_service` (or a configured command) as children of the LB."""

    kind = "process"
    DEFAULT_PREFIX = "Server "

    def __init__(
        self, host: str = "127.0.0.1", command: Sequence[str] | None = None, name_prefix: str | None = None
    ) -> None:
        self.name_prefix = self.DEFAULT_PREFIX if name_prefix is None else name_prefix
        self._host = host
        # No command: fork replicas from a warm fork server (fast). A command: exec it (any server).
        if not command and not main_is_reimportable():
            command = EXEC_REPLICA  # e.g. code piped to `python -`: the fork server could not re-import it
        self._command = list(command) if command else None
        self._fork: ForkServerContext | None = None if command else start_fork_server()
        self._children: dict[int, ProcessHandle] = {}  # pid -> handle, for replicas not yet stopped
        self._watches: dict[int, Callable[[], None]] = {}  # pid -> stops watching for its exit
        self.on_exit: Callable[[ProcessHandle], object] | None = None

    def check_name(self, name: str) -> None:
        """Any printable name of 1-64 characters works: it only travels in an environment variable."""
        if not 0 < len(name) <= 64 or not name.isprintable() or name != name.strip():
            raise InvalidRequestError(
                f"invalid replica name {quote(name)}: use 1-64 printable characters "
                "without leading or trailing spaces"
            )

    async def start(self, name: str) -> ProcessHandle:
        """Bind a loopback port, start the child on it and return at once (not yet serving)."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, 0))
            sock.listen(1024)
            port = sock.getsockname()[1]
            try:
                child = await self._spawn(name, sock, port)
            except OSError as exc:
                raise ReplicaStartError(f"could not start replica {name!r}: {exc}") from exc
        finally:
            sock.close()
        handle = ProcessHandle(name=name, host=self._host, port=port, process=child)
        self._children[child.pid] = handle
        self._watch_exit(handle)
        logger.info("replica %s: started process pid=%d on %s:%d", name, child.pid, self._host, port)
        return handle

    def _watch_exit(self, handle: ProcessHandle) -> None:
        """Learn of the exit the moment it happens (a pidfd turns readable), as Docker's die events do."""
        unwatch = watch_exit(handle.child.pid, lambda: self._on_exit_seen(handle))
        if unwatch is not None:  # else (old kernel, already reaped): probes still notice
            self._watches[handle.child.pid] = unwatch

    def _unwatch(self, pid: int) -> None:
        unwatch = self._watches.pop(pid, None)
        if unwatch is not None:
            unwatch()

    def _on_exit_seen(self, handle: ProcessHandle) -> None:
        pid = handle.child.pid
        self._unwatch(pid)
        if self._children.get(pid) is not handle or self.on_exit is None:
            return  # stopped by us: not a crash
        logger.warning("replica %s: process %d exited", handle.name, pid)
        self.on_exit(handle)

    async def _spawn(self, name: str, sock: socket.socket, port: int) -> ChildProcess:
        if self._fork is not None:
            # The first start waits for the fork server's imports (~1 s): keep it off the event loop.
            return await asyncio.to_thread(ForkedReplica.start, self._fork, name, sock)
        assert self._command is not None
        fields = {"fd": str(sock.fileno()), "port": str(port), "host": self._host}
        argv = [part.format(**fields) for part in self._command]
        passes_fd = any("{fd}" in part for part in self._command)
        env = {**os.environ, "SERVER_ID": name, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(
            argv,
            env=env,
            pass_fds=(sock.fileno(),) if passes_fd else (),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the LB only; it stops replicas in order
            preexec_fn=die_with_parent,  # noqa: PLW1509 - must run in the child
        )

    def exited(self, handle: ProcessHandle) -> bool:
        return handle.child.poll() is not None

    async def stop(self, handle: ProcessHandle) -> None:
        """SIGTERM, then SIGKILL after a grace period; reaps the child."""
        pid = handle.child.pid
        if self._children.get(pid) is handle:
            del self._children[pid]  # first: the exit our own signal causes is not a crash
        self._unwatch(pid)
        await self._terminate(handle.child)

    async def adopt(self) -> list[ProcessHandle]:
        return []  # children die with the LB, so there is never anything to take over

    async def close(self) -> None:
        handles = list(self._children.values())
        self._children.clear()
        for pid in list(self._watches):
            self._unwatch(pid)
        await asyncio.gather(*(self._terminate(h.child) for h in handles))

    @staticmethod
    async def _terminate(proc: ChildProcess) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, _STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        else:
            proc.wait()
