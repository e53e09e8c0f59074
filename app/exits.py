"""Learn of a child process's exit the moment it happens: its pidfd turns readable (no polling, no thread)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

logger = logging.getLogger(__name__)


def watch_exit(pid: int, on_exit: Callable[[], object]) -> Callable[[], None] | None:
    """Call `on_exit()` on the running loop once process `pid` exits; returns the call that stops watching.

    None where there is no pidfd (an old kernel, or `pid` already reaped): the caller falls back on
    whatever else tells it (health probes, a blocking wait in a thread).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError) as exc:
        logger.debug("no pidfd for pid %d (%s)", pid, exc)
        return None
    loop = asyncio.get_running_loop()
    watching = True

    def unwatch() -> None:
        nonlocal watching
        if watching:
            watching = False
            loop.remove_reader(pidfd)
            os.close(pidfd)

    def exited() -> None:
        unwatch()
        on_exit()

    loop.add_reader(pidfd, exited)
    return unwatch
