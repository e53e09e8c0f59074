"""What both Docker runtimes (containers, Swarm services) share: a client made lazily and off the event
loop, one readiness step, their name rule, and a safe way back onto the loop from the events thread."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import docker
import requests
from docker.errors import DockerException

from app.errors import InvalidRequestError, ReplicaStartError, quote
from app.runtimes.docker_events import EventFollower
from app.settings import Settings

ClientSource = Any  # a docker.DockerClient, or a zero-argument callable that makes one (docker.from_env)
T = TypeVar("T")


class DockerClientBase:
    """The connection to one Docker engine, shared by a runtime's worker threads and events thread."""

    kind: str
    DEFAULT_PREFIX: ClassVar[str] = "server"  # generated names server1, server2, ... are valid names
    CONTAINER_PORT: ClassVar[int] = 5000
    NAME_RE: ClassVar[re.Pattern[str]]
    NAME_RULE: ClassVar[str]  # says what NAME_RE allows, for the error message

    def __init__(self, client: ClientSource, name_prefix: str) -> None:
        self._client_source = client
        self._owns_client = callable(client) and not isinstance(client, docker.DockerClient)
        self._client: Any = None
        self._events_client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self._follower: EventFollower | None = None
        self._lock = threading.Lock()  # guards what the worker threads and the events thread share
        self.name_prefix = name_prefix
        try:
            self.check_name(f"{name_prefix}1")  # generated names must be valid names on the engine
        except InvalidRequestError as exc:
            raise ValueError(
                f"replica prefix {name_prefix!r} makes invalid names (e.g. {name_prefix!r}1): "
                f"{self.NAME_RULE} (default {self.DEFAULT_PREFIX!r})"
            ) from exc

    def check_name(self, name: str) -> None:
        """Raise InvalidRequestError unless the engine accepts `name` (and DNS can resolve it)."""
        if not self.NAME_RE.fullmatch(name):
            raise InvalidRequestError(
                f"Invalid replica name {quote(name)}: on the {self.kind} runtime {self.NAME_RULE}"
            )

    async def _ensure_ready(self) -> None:
        """Connect and prepare once (in a worker thread); later calls return at once."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                self._loop = asyncio.get_running_loop()
                await asyncio.to_thread(self._prepare_sync)
                self._ready = True

    def _prepare_sync(self) -> None:
        """The runtime's own preparation, in a worker thread; starts by calling _connect_sync()."""
        raise NotImplementedError

    def _connect_sync(self) -> None:
        if self._client is None:
            self._client = self._client_source() if self._owns_client else self._client_source

    async def _engine_call(self, failure: str, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking SDK call in a worker thread; an engine error becomes ReplicaStartError."""
        try:
            return await asyncio.to_thread(call, *args)
        except (DockerException, requests.RequestException) as exc:
            raise ReplicaStartError(f"{failure}: {exc}") from exc

    def _call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """From the events thread: run `callback(*args)` on the event loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the LB is shutting down
                loop.call_soon_threadsafe(callback, *args)


def engine_options(settings: Settings, client: ClientSource = None) -> dict[str, Any]:
    """The constructor arguments both Docker runtimes take from the settings alike."""
    prefix = settings.replica_prefix
    return {
        "client": client if client is not None else docker.from_env,
        "image": settings.docker_image,
        "label": settings.docker_label,
        "name_prefix": DockerClientBase.DEFAULT_PREFIX if prefix is None else prefix,
    }
