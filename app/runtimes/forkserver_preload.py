"""The process runtime's fork server preload: imported only inside the fork server, never by the LB itself.

It makes the fork server die with the LB, so its replicas (which die with the fork server) never
outlive an LB killed with SIGKILL, and it imports FastAPI and uvicorn once for every replica forked.
The LB puts its pid in CHLB_LB_PID; the fork server puts its own in CHLB_FORKSERVER_PID for the forks,
and names itself `chlb fork server` in ps.
When the LB dies without its clean-up (SIGKILL), the fork server removes the LB's multiprocessing folder
(CHLB_FORKSERVER_TMP, where its own socket lives) on its way out.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import time
from types import FrameType

from setproctitle import setproctitle

from app.lifeline import die_with_parent

_lb_pid = os.environ.get("CHLB_LB_PID")
_lb_tmp = os.environ.get("CHLB_FORKSERVER_TMP")
_fork_server_pid = os.getpid()


def _remove_lb_folder() -> None:
    """When the LB died (which is why we stop), remove the folder it could not; never while it lives."""
    if os.getpid() != _fork_server_pid or not (_lb_tmp and _lb_pid):
        return
    # Its death closes our pipe from it a moment before we are reparented (and signalled): wait for that.
    deadline = time.monotonic() + 0.5
    while os.getppid() == int(_lb_pid):
        if time.monotonic() > deadline:
            return  # the LB lives on: the folder is still its own
        time.sleep(0.01)
    shutil.rmtree(_lb_tmp, ignore_errors=True)


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM, sent when the LB dies: clean up, then exit (a replica just forked: the default action)."""
    if os.getpid() != _fork_server_pid:  # forked, before the replica reset the handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _remove_lb_folder()
    os._exit(0)


# The lifeline first, the heavy imports after: an LB that dies while they run must still be noticed.
signal.signal(signal.SIGTERM, _stop)  # the replicas forked from here reset it (forkserver.serve)
atexit.register(_remove_lb_folder)  # the other way out: the LB's end closes our pipe from it
die_with_parent()
if _lb_pid and os.getppid() != int(_lb_pid):  # it died before we asked for the signal
    _remove_lb_folder()
    os._exit(1)
os.environ["CHLB_FORKSERVER_PID"] = str(_fork_server_pid)
# For ps, instead of `python -B -c from multiprocessing.forkserver ...`; argv only, not the environment
# (as forkserver.set_title, which is not imported yet: it comes with the heavy imports).
os.environ["SPT_NOENV"] = "1"
setproctitle("chlb fork server")

from app.runtimes import forkserver  # noqa: E402, F401 - the preload itself: FastAPI, uvicorn, the app
