"""Tie a process's life to its parent's: Linux sends it a signal when the parent dies, even by SIGKILL."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `signum` when the parent (thread) that started us exits; no-op off Linux.

    With `parent_pid`, also exit at once if that parent is already gone: a parent that died before
    the request was made would otherwise never send the signal.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
