"""Replicas as local child processes: the embedded default, so `make run` needs no Docker.

The LB binds each replica's listening socket itself and hands it to the child (uvicorn --fd), so
there is no window in which another process can take the port between choosing and using it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

from app.errors import InvalidRequestError, ReplicaStartError
from app.orchestrators.base import ReplicaHandle

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 3.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the replica if the LB dies, even by SIGKILL: no orphans."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def default_command() -> list[str]:
    """This interpreter running replica_service on the socket the LB bound."""
    return [sys.executable, "-m", "replica_service", "--fd", "{fd}"]


class ProcessOrchestrator:
    """Starts `replica_service` (or a configured command) as children of the LB."""

    kind = "process"
    DEFAULT_PREFIX = "Server "

    def __init__(
        self, host: str = "127.0.0.1", command: Sequence[str] | None = None, name_prefix: str | None = None
    ) -> None:
        self.name_prefix = self.DEFAULT_PREFIX if name_prefix is None else name_prefix
        self._host = host
        self._command = list(command) if command else default_command()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self.on_exit: Callable[[ReplicaHandle], object] | None = None  # unused: the monitor polls exited()

    def check_name(self, name: str) -> None:
        """Any printable name of 1-64 characters works: it only travels in an environment variable."""
        if not 0 < len(name) <= 64 or not name.isprintable() or name != name.strip():
            raise InvalidRequestError(
                f"invalid replica name {name!r}: use 1-64 printable characters "
                "without leading or trailing spaces"
            )

    async def start(self, name: str) -> ReplicaHandle:
        """Bind a loopback port, start the child on it and return at once (not yet serving)."""
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, 0))
            sock.listen(1024)
            port = sock.getsockname()[1]
            fields = {"fd": str(sock.fileno()), "port": str(port), "host": self._host}
            argv = [part.format(**fields) for part in self._command]
            passes_fd = any("{fd}" in part for part in self._command)
            if not passes_fd:
                sock.close()  # the command binds the port itself
            env = {**os.environ, "SERVER_ID": name, "PYTHONUNBUFFERED": "1"}
            try:
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    pass_fds=(sock.fileno(),) if passes_fd else (),
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # Ctrl-C reaches the LB only; it stops replicas in order
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - must run in the child
                )
            except OSError as exc:
                raise ReplicaStartError(f"could not start replica {name!r}: {exc}") from exc
        finally:
            sock.close()
        self._children[proc.pid] = proc
        logger.info("replica %s: started process pid=%d on %s:%d", name, proc.pid, self._host, port)
        return ReplicaHandle(name=name, host=self._host, port=port, ref=proc)

    def exited(self, handle: ReplicaHandle) -> bool:
        proc = handle.ref
        assert isinstance(proc, subprocess.Popen)
        return proc.poll() is not None

    async def stop(self, handle: ReplicaHandle) -> None:
        """SIGTERM, then SIGKILL after a grace period; reaps the child."""
        proc = handle.ref
        assert isinstance(proc, subprocess.Popen)
        await self._terminate(proc)
        self._children.pop(proc.pid, None)

    async def adopt(self) -> list[ReplicaHandle]:
        return []  # children die with the LB, so there is never anything to take over

    async def close(self) -> None:
        await asyncio.gather(*(self._terminate(p) for p in list(self._children.values())))
        self._children.clear()

    @staticmethod
    async def _terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, _STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        else:
            proc.wait()
