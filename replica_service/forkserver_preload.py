"""Imported only inside the LB's fork server (multiprocessing preload), never by the LB itself.

It makes the fork server die with the LB, so its replicas (which die with the fork server) never
outlive an LB killed with SIGKILL, and it imports FastAPI and uvicorn once for every replica forked.
"""

from __future__ import annotations

from replica_service import forked  # noqa: F401 - the preload itself: FastAPI, uvicorn, the app
from replica_service.lifeline import die_with_parent

die_with_parent()
