"""Imported only inside the LB's fork server (multiprocessing preload), never by the LB itself.

It makes the fork server die with the LB, so its replicas (which die with the fork server) never
outlive an LB killed with SIGKILL, and it imports FastAPI and uvicorn once for every replica forked.
The LB puts its pid in CHLB_LB_PID; the fork server puts its own in CHLB_FORKSERVER_PID for the forks.
"""

from __future__ import annotations

import os

from replica_service import forked  # noqa: F401 - the preload itself: FastAPI, uvicorn, the app
from replica_service.lifeline import die_with_parent

_lb_pid = os.environ.get("CHLB_LB_PID")
die_with_parent(int(_lb_pid) if _lb_pid else None)
os.environ["CHLB_FORKSERVER_PID"] = str(os.getpid())
