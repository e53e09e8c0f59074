"""Replicas as Docker containers, one per replica, named after it (`docker stop server2` stops `server2`).

Every blocking docker SDK call runs in a worker thread (asyncio.to_thread), never on the event loop.
A daemon thread (app.runtimes.docker_events) follows the engine's `die` events for our label, so `exited()`
is a set lookup and `on_exit` can tell the pool about a crash at once, sooner than a heartbeat would.

Ownership: each container carries `{label}=1` and `{label}.owner=<owner>`. Only containers with both
are ever removed, replaced or adopted; a name taken by anything else is an error, never a deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from app.errors import ReplicaExistsError, ReplicaStartError
from app.runtimes.base import ReplicaHandle
from app.runtimes.docker_client import ClientSource, DockerClientBase, engine_options
from app.runtimes.docker_events import EventFollower
from app.settings import Settings

logger = logging.getLogger(__name__)

_DEAD_IDS_KEPT = 4096  # die events remembered, so a crash before start() returns is still seen
_INFLIGHT_WAIT_SECONDS = 60.0
_EVENTS_RETRY_SECONDS = 1.0


@dataclass(eq=False)
class DockerHandle(ReplicaHandle):
    """A replica container: reached by name (on the network) or a loopback port, removed by id."""

    container_id: str = field(default="", repr=False)


ExitCallback = Callable[[DockerHandle], object]


class DockerRuntime(DockerClientBase):
    """Starts `replica_service` containers on a user-defined bridge network.

    `on_exit`, when set (the pool sets it), is called on the event loop as `on_exit(handle)` when a
    container this runtime manages dies unexpectedly (crash, OOM, `docker kill`/`docker stop`).
    It is never called for containers removed through `stop()` or `close()`. It must not block.
    """

    kind = "docker"
    # Docker's own rule is [a-zA-Z0-9][a-zA-Z0-9_.-]+ (it rejects one-character names, measured); 63 is
    # the DNS label limit, which matters because other containers reach a replica by its name.
    NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,62}")
    NAME_RULE = (
        "a name is a container name, 2-63 characters from a-z A-Z 0-9 _ . - starting with a letter or digit"
    )

    def __init__(
        self,
        client: ClientSource,
        *,
        image: str,
        network: str,
        label: str,
        in_container: bool = False,
        name_prefix: str = DockerClientBase.DEFAULT_PREFIX,
        remove_on_stop: bool = True,
        owner: str = "lb",
    ) -> None:
        super().__init__(client, name_prefix)
        self.image = image
        self.network = network
        self.label = label
        self.owner_label = f"{label}.owner"
        self.owner = owner
        self.in_container = in_container
        self.remove_on_stop = remove_on_stop
        self.on_exit: ExitCallback | None = None
        self._closed = False
        self._created_network = False
        # Shared with the events thread and the worker threads: guarded by _lock.
        self._handles: dict[str, DockerHandle] = {}  # container id -> handle, for live replicas we manage
        self._dead: OrderedDict[str, None] = OrderedDict()  # container ids seen dying (bounded)
        self._inflight = 0
        self._inflight_done = threading.Condition(self._lock)

    # ----- Runtime protocol ------------------------------------------------------------
    async def start(self, name: str) -> DockerHandle:
        """Run a container called `name` (replacing a leftover of ours); returns before it serves."""
        self.check_name(name)
        await self._ensure_ready()
        if self._closed:
            raise ReplicaStartError(f"Cannot start replica '{name}': the docker runtime is closed")
        handle, died_already = await self._engine_call(
            f"Cannot start replica '{name}'", self._start_sync, name
        )
        if died_already:  # its die event came before the handle existed: report it now
            self._notify_exit(handle)
        return handle

    async def stop(self, handle: DockerHandle) -> None:
        """Force-remove the container; idempotent (an already removed container is fine)."""
        cid = handle.container_id
        with self._lock:
            self._handles.pop(cid, None)  # first: the die event our own removal causes is not a crash
        if self._client is None:
            return
        await asyncio.to_thread(self._remove_sync, cid, handle.name)

    def exited(self, handle: DockerHandle) -> bool:
        """True once the container died or was stopped; a set lookup fed by the events thread."""
        cid = handle.container_id
        with self._lock:
            return cid in self._dead or cid not in self._handles

    async def adopt(self) -> list[DockerHandle]:
        """Take over running containers of ours (an earlier LB's); remove our stopped ones."""
        await self._ensure_ready()
        return await asyncio.to_thread(self._adopt_sync)

    async def close(self) -> None:
        """Stop following events; remove the containers we started or adopted if remove_on_stop."""
        self._closed = True
        if self._client is None:
            return
        # A start still running in a worker thread would create a container after the sweep below.
        await asyncio.to_thread(self._wait_inflight, _INFLIGHT_WAIT_SECONDS)
        self._stop_events()
        if self.remove_on_stop:
            with self._lock:
                handles = list(self._handles.values())
                self._handles.clear()
            await asyncio.gather(
                *(asyncio.to_thread(self._remove_sync, h.container_id, h.name) for h in handles)
            )
            if self._created_network:
                await asyncio.to_thread(self._remove_network_sync)
        if self._owns_client:
            await asyncio.to_thread(self._client.close)
        if self._events_client is not None and self._events_client is not self._client:
            await asyncio.to_thread(self._events_client.close)
        self._client = None

    # ----- readiness ------------------------------------------------------------------------
    def _prepare_sync(self) -> None:
        """Connect, make sure the network exists, and subscribe to die events before any start."""
        try:
            self._connect_sync()
            self._ensure_network_sync()
            # A second connection for the long-lived stream when we can make one: the blocking read
            # then never shares a connection pool with the calls of the worker threads.
            self._events_client = self._client_source() if self._owns_client else self._client
            follower = EventFollower(
                self._open_events, self._on_die, f"docker-events-{self.label}", _EVENTS_RETRY_SECONDS
            )
            follower.start()
        except (DockerException, requests.RequestException) as exc:
            raise ReplicaStartError(f"Docker engine unavailable: {exc}") from exc
        self._follower = follower

    def _ensure_network_sync(self) -> None:
        if self._find_network() is not None:
            return
        try:
            self._client.networks.create(
                self.network, driver="bridge", labels={self.label: "1"}, check_duplicate=True
            )
            self._created_network = True
            logger.info("created docker network %s", self.network)
        except APIError as exc:
            if self._find_network() is None:  # not a lost race with another creator
                raise
            logger.debug("network %s appeared concurrently: %s", self.network, exc)
        if self.in_container:
            logger.warning(
                "created network %s, but this LB's container is not attached to it: "
                "replicas will be unreachable by name (run the LB with docker compose)",
                self.network,
            )

    def _find_network(self) -> Any:
        # The API's name filter matches substrings: keep only the exact name.
        for net in self._client.networks.list(names=[self.network]):
            if net.name == self.network:
                return net
        return None

    def _remove_network_sync(self) -> None:
        net = self._find_network()
        if net is None:
            return
        try:
            net.remove()
            logger.info("removed docker network %s", self.network)
        except APIError as exc:  # still in use by containers we do not own: leave it
            logger.warning("could not remove docker network %s: %s", self.network, exc)

    # ----- worker-thread bodies -------------------------------------------------------------
    @contextlib.contextmanager
    def _counting_inflight(self) -> Iterator[None]:
        with self._lock:
            self._inflight += 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight -= 1
                self._inflight_done.notify_all()

    def _wait_inflight(self, timeout: float) -> None:
        with self._lock:
            self._inflight_done.wait_for(lambda: self._inflight == 0, timeout)

    def _start_sync(self, name: str) -> tuple[DockerHandle, bool]:
        """Create and start the container; also says whether it already died (crashed at once)."""
        with self._counting_inflight():
            self._clear_name(name)
            kwargs: dict[str, Any] = {}
            if not self.in_container:
                # Loopback only: nothing outside this machine can reach a replica.
                kwargs["ports"] = {f"{self.CONTAINER_PORT}/tcp": ("127.0.0.1", None)}
            try:
                container = self._client.containers.create(
                    self.image,
                    name=name,
                    hostname=name,
                    environment={"SERVER_ID": name},
                    labels={self.label: "1", self.owner_label: self.owner},
                    network=self.network,
                    detach=True,
                    **kwargs,
                )
            except ImageNotFound as exc:
                raise ReplicaStartError(
                    f"Cannot start replica '{name}': image {self.image!r} not found "
                    "(build it: make docker-images)"
                ) from exc
            except APIError as exc:
                if exc.status_code == 409:
                    raise ReplicaExistsError(
                        f"Cannot start replica '{name}': a container with that name appeared meanwhile"
                    ) from exc
                raise ReplicaStartError(f"Cannot start replica '{name}': {exc.explanation or exc}") from exc
            try:
                container.start()
                handle = self._handle_for(container, reload=True)
            except (APIError, ReplicaStartError) as exc:
                self._remove_sync(container.id, name)
                if isinstance(exc, ReplicaStartError):
                    raise
                raise ReplicaStartError(f"Cannot start replica '{name}': {exc.explanation or exc}") from exc
            with self._lock:
                closed = self._closed
                died_already = container.id in self._dead
                if not closed:
                    self._handles[container.id] = handle
            if closed:  # close() ran while we were starting: do not leak the container
                if self.remove_on_stop:
                    self._remove_sync(container.id, name)
                raise ReplicaStartError(f"Replica '{name}' started after the runtime closed")
            logger.info("replica %s: started container %s at %s", name, container.short_id, handle.address)
            return handle, died_already

    def _clear_name(self, name: str) -> None:
        """Remove a leftover container of ours with this name; refuse to touch anyone else's."""
        try:
            existing = self._client.containers.get(name)
        except NotFound:
            return
        # `get` also matches id prefixes: only an exact name match is that container.
        if existing.name != name:
            return
        labels = existing.labels or {}
        if labels.get(self.label) != "1" or labels.get(self.owner_label) != self.owner:
            raise ReplicaExistsError(
                f"Cannot start replica '{name}': a container with that name exists and was not "
                "started by this load balancer"
            )
        with self._lock:
            self._handles.pop(existing.id, None)
        logger.info("replica %s: removing leftover container %s", name, existing.short_id)
        self._remove_sync(existing.id, name)

    def _remove_sync(self, cid: str, name: str) -> None:
        try:
            self._client.api.remove_container(cid, force=True, v=True)
            logger.info("replica %s: removed container %s", name, cid[:12])
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                return  # a concurrent removal of the same container
            raise

    def _adopt_sync(self) -> list[DockerHandle]:
        filters = {"label": [f"{self.label}=1", f"{self.owner_label}={self.owner}"]}
        adopted: list[DockerHandle] = []
        for container in self._client.containers.list(all=True, filters=filters):
            with self._lock:
                known = self._handles.get(container.id)
            if known is not None:
                adopted.append(known)  # adopt() twice returns the same handles, no duplicates
                continue
            handle = None
            if container.status == "running":
                try:
                    handle = self._handle_for(container, reload=False)
                except ReplicaStartError as exc:
                    logger.warning("replica %s: not adoptable (%s)", container.name, exc.message)
            if handle is None:
                logger.info("replica %s: removing %s container", container.name, container.status)
                self._remove_sync(container.id, container.name)
                continue
            with self._lock:
                self._handles[container.id] = handle
            adopted.append(handle)
            logger.info("replica %s: adopted container %s", handle.name, container.short_id)
        return adopted

    def _handle_for(self, container: Any, *, reload: bool) -> DockerHandle:
        """Where the LB reaches the replica: by name on the network, or on its loopback port."""
        if reload:
            container.reload()
        name: str = container.name
        settings = container.attrs.get("NetworkSettings") or {}
        if self.in_container:
            if self.network not in (settings.get("Networks") or {}):
                raise ReplicaStartError(f"container '{name}' is not on network {self.network}")
            return DockerHandle(name=name, host=name, port=self.CONTAINER_PORT, container_id=container.id)
        bindings = (settings.get("Ports") or {}).get(f"{self.CONTAINER_PORT}/tcp") or []
        for binding in bindings:
            if binding.get("HostIp") == "127.0.0.1" and binding.get("HostPort"):
                return DockerHandle(
                    name=name, host="127.0.0.1", port=int(binding["HostPort"]), container_id=container.id
                )
        raise ReplicaStartError(f"container '{name}' publishes no loopback port for {self.CONTAINER_PORT}")

    # ----- die events -----------------------------------------------------------------------
    def _open_events(self, since: float | None = None) -> Any:
        # Returns once the engine has accepted the subscription: no die event after this is missed.
        filters = {"type": "container", "event": "die", "label": self.label}
        return self._events_client.events(decode=True, filters=filters, since=since)

    def _on_die(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        if attributes.get(self.owner_label) != self.owner:
            return
        cid = str(actor.get("ID") or event.get("id") or "")
        with self._lock:
            seen = cid in self._dead  # a replay after a reconnect: reported already
            self._dead[cid] = None
            while len(self._dead) > _DEAD_IDS_KEPT:
                self._dead.popitem(last=False)
            handle = None if seen else self._handles.get(cid)
        if handle is None:  # removed by us (stop/close/replace), or not ours to report
            return
        logger.warning("replica %s: container died (exit code %s)", handle.name, attributes.get("exitCode"))
        self._notify_exit(handle)

    def _notify_exit(self, handle: DockerHandle) -> None:
        if self.on_exit is not None:
            self._call_soon(self._fire_exit, handle)

    def _fire_exit(self, handle: DockerHandle) -> None:
        callback = self.on_exit
        if callback is None:
            return
        with self._lock:
            managed = self._handles.get(handle.container_id) is handle
        if not managed:
            return  # stopped by us in the meantime: not a crash
        try:
            callback(handle)
        except Exception:
            logger.exception("on_exit callback failed for replica %s", handle.name)

    def _stop_events(self) -> None:
        if self._follower is not None:
            self._follower.stop()


def create_docker_runtime(settings: Settings, client: ClientSource = None) -> DockerRuntime:
    """The docker runtime as the settings describe it; connects lazily (no I/O here)."""
    return DockerRuntime(
        **engine_options(settings, client),
        network=settings.docker_network,
        in_container=settings.docker_in_container,
        remove_on_stop=settings.docker_remove_on_stop,
    )
