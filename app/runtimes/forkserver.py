"""The process runtime's warm fork server (multiprocessing "forkserver") and the replicas forked from it.

The fork server imports FastAPI, uvicorn and the replica app once (its preload module,
app.runtimes.forkserver_preload); each replica is then a fork that only builds its app and serves, so
a replacement answers in tens of milliseconds instead of the ~1 s a cold interpreter needs to import
FastAPI. This module is imported on both sides: the LB starts the fork server and holds ForkedReplica
objects; the forks run `serve`. Without the fork server (the LB's __main__ cannot be re-imported), the
LB execs `python -m app.runtimes.forkserver --fd N` instead, which serves the same way.

Every process here names itself for `ps` (setproctitle rewrites its argv): `chlb fork server`, and
`chlb replica <name>` for each replica, instead of multiprocessing's `python -B -c from ...`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.process
import multiprocessing.util
import os
import signal
import socket
import subprocess
import sys

import uvicorn
from setproctitle import setproctitle

from app.lifeline import die_with_parent
from replica_service.app import create_app

PRELOAD = "app.runtimes.forkserver_preload"


def replica_title(name: str) -> str:
    """What `ps` shows for a replica process, e.g. `chlb replica Server 1`."""
    return f"chlb replica {name}"


def set_title(title: str) -> None:
    """Name this process in ps by rewriting its argv, and only its argv.

    SPT_NOENV, read by the process's first setproctitle(): without it, a title longer than the
    original command line takes over the environment's memory, and /proc/<pid>/environ (which
    operators and tests read) comes back empty. With it, such a title is cut to that length instead:
    the fork server's command line is long, the exec'd replica's shorter (a long name may be cut).
    """
    os.environ["SPT_NOENV"] = "1"
    setproctitle(title)


def main_is_reimportable() -> bool:
    """Whether multiprocessing can re-import __main__ in the fork server (as it always tries to)."""
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    return getattr(main, "__spec__", None) is not None or main_file is None or os.path.isfile(main_file)


def start_fork_server() -> multiprocessing.context.ForkServerContext:
    """One fork server per LB, with FastAPI and uvicorn imported before any replica forks.

    Started here, from the caller's thread, because the fork server dies with the thread that
    started it (PR_SET_PDEATHSIG, set by its preload module).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD])
    os.environ["CHLB_LB_PID"] = str(os.getpid())  # lets the fork server notice an LB already gone
    # multiprocessing's folder for the fork server's socket: removed at exit, which an LB killed with
    # SIGKILL never reaches; then the fork server, which outlives it by a moment, removes it.
    os.environ["CHLB_FORKSERVER_TMP"] = multiprocessing.util.get_temp_dir()
    multiprocessing.forkserver.ensure_running()
    return ctx


class ForkedReplica:
    """A replica forked from the warm fork server, with Popen's poll/terminate/kill/wait."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid = process.pid or 0

    @classmethod
    def start(
        cls, ctx: multiprocessing.context.ForkServerContext, name: str, sock: socket.socket
    ) -> ForkedReplica:
        """Fork a replica serving on `sock` (blocking: the first call waits for the fork server's imports)."""
        process = ctx.Process(target=serve, args=(name, sock), name=f"replica {name}", daemon=False)
        process.start()
        return cls(process)

    def poll(self) -> int | None:
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"replica pid {self.pid}", timeout or 0.0)
        return code


def serve(server_id: str, sock: socket.socket) -> None:
    """The fork's entry point: die with the fork server (which dies with the LB), then serve on `sock`."""
    set_title(replica_title(server_id))  # first: until then ps shows the fork server's command
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the fork server's own handler
    fork_server = os.environ.get("CHLB_FORKSERVER_PID")
    die_with_parent(int(fork_server) if fork_server else None)
    os.setsid()  # Ctrl-C at the terminal reaches the LB only; it stops replicas in order
    os.environ["SERVER_ID"] = server_id
    run_replica(server_id, sock)


def run_replica(server_id: str, sock: socket.socket) -> None:
    """Serve the replica app on a socket the LB bound (forked or exec'd alike)."""
    config = uvicorn.Config(create_app(server_id), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    """The exec'd replica: `python -m app.runtimes.forkserver --fd N`, named by $SERVER_ID.

    The LB started it in its own session, to die with the LB (process.ProcessRuntime._spawn).
    """
    parser = argparse.ArgumentParser(description="Serve one replica on an inherited, bound socket.")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    server_id = os.environ.get("SERVER_ID", "unknown")
    set_title(replica_title(server_id))
    # socket(fileno=) finds the real family (TCP), so accepted connections get TCP_NODELAY.
    run_replica(server_id, socket.socket(fileno=args.fd))


if __name__ == "__main__":
    main()
