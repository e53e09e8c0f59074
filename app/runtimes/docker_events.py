"""A daemon thread that follows a Docker engine event stream and reconnects when it drops.

The docker SDK's stream is blocking, so it lives in its own thread; on a reconnect it replays from
the last event seen (`since`), so a dropped connection loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests
from docker.errors import DockerException

logger = logging.getLogger(__name__)

Event = dict[str, Any]
OpenStream = Callable[[float | None], Iterable[Event]]  # since (Unix time) or None -> decoded events


class EventFollower:
    """Calls `handle(event)` in its thread for every event of the stream `open_stream` opens."""

    def __init__(
        self, open_stream: OpenStream, handle: Callable[[Event], None], name: str, retry: float = 1.0
    ):
        self._open = open_stream
        self._handle = handle
        self._retry = retry
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Open the stream here (so no event after this call is missed), then follow it in the thread."""
        self._stream = self._open(None)
        self._thread.start()

    def stop(self) -> None:
        """Cut the stream and wait (briefly) for the thread to end."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):  # already closed or broken: either way it is over
                stream.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        stream = self._stream
        last = time.time()
        while not self._stop.is_set():
            try:
                for event in stream:
                    last = float(event.get("time") or last)
                    self._handle(event)
            except Exception:  # the stream is all this thread has: log and reconnect
                if self._stop.is_set():
                    return  # stop() cut the stream
                logger.exception("docker events stream failed")
            if self._stop.wait(self._retry):
                return
            try:
                stream = self._stream = self._open(last)
                logger.info("docker events stream reconnected")
            except (DockerException, requests.RequestException) as exc:
                logger.warning("docker events stream: reconnect failed (%s)", exc)
