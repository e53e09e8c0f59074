"""Replicas as Docker Swarm services, one per replica and named after it; the engine holds membership.

A replica is a service with one task on an attachable overlay network, `endpoint_mode: dnsrr` (its name
resolves to its task's IP: no virtual IP, so no IPVS needed), the engine's restart policy and the label
`{label}={cluster}` that ties it to one LB cluster. Every LB instance of the cluster lists those
services and follows the engine's events; none of them keeps a copy of its own. When a task dies the
engine starts a new one under the same service name: the LB never starts a second copy.

Service names are unique in a swarm, so a create that conflicts with a service of this cluster means
another LB instance made it at the same time (PeerCreatedError: at boot the membership then takes it
from the listing, and /add answers 409 rather than count one replica twice). Anything else holding the
name is an error, never a deletion. Every blocking docker SDK call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import docker
import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import EndpointSpec, Healthcheck, RestartPolicy, ServiceMode

from app.errors import InvalidRequestError, PeerCreatedError, ReplicaExistsError, ReplicaStartError, quote
from app.runtimes.base import ReplicaHandle
from app.runtimes.engine import TaskView
from app.runtimes.events import Event, EventFollower
from app.settings import Settings

logger = logging.getLogger(__name__)

# Swarm's rule: a service name must be a DNS label (measured: "a.b" and "ab-" are refused).
_NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?")
_SERVICE_ID = "com.docker.swarm.service.id"
_CHANGES = {("service", "create"), ("service", "update"), ("service", "remove")}
_TASK_CHANGES = {("container", "start"), ("container", "die")}

ClientSource = Any  # a docker.DockerClient, or a zero-argument callable that makes one (docker.from_env)


@dataclass(eq=False)
class SwarmHandle(ReplicaHandle):
    """A replica service: reached by its name through Swarm's DNS, removed by its id."""

    service_id: str = field(default="", repr=False)


class SwarmRuntime:
    """Creates, lists and removes replica services; follows service and task-container events.

    `on_exit(handle)` is called on the event loop when a task's container dies (the engine restarts
    it; the LB takes it off the ring meanwhile); `on_change()` when the listing may have changed.
    """

    kind = "swarm"
    DEFAULT_PREFIX: ClassVar[str] = "server"
    CONTAINER_PORT: ClassVar[int] = 5000

    def __init__(
        self,
        client: ClientSource,
        *,
        image: str,
        network: str,
        label: str,
        cluster: str,
        name_prefix: str = DEFAULT_PREFIX,
        restart_delay: float = 0.5,
    ) -> None:
        self._client_source = client
        self.image = image
        self.network = network
        self.label = label
        self.cluster = cluster
        self.name_prefix = name_prefix
        self.restart_delay = restart_delay
        try:
            self.check_name(f"{name_prefix}1")
        except InvalidRequestError as exc:
            raise ValueError(
                f"replica prefix {name_prefix!r} makes invalid service names (e.g. {name_prefix!r}1); "
                f"use letters, digits, '_', '-' (default {self.DEFAULT_PREFIX!r})"
            ) from exc
        self.on_exit: Callable[[SwarmHandle], object] | None = None
        self.on_change: Callable[[], object] | None = None
        self._owns_client = callable(client) and not isinstance(client, docker.DockerClient)
        self._client: Any = None
        self._events_client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_lock = asyncio.Lock()
        self._ready = False
        self._follower: EventFollower | None = None
        self._lock = threading.Lock()  # guards _handles (worker threads and the events thread)
        self._handles: dict[str, SwarmHandle] = {}  # service id -> handle

    # ----- Runtime protocol ------------------------------------------------------------------------
    def check_name(self, name: str) -> None:
        """Raise InvalidRequestError unless `name` is a valid Swarm service name."""
        if not _NAME_RE.fullmatch(name):
            raise InvalidRequestError(
                f"Invalid replica name {quote(name)}: on the swarm runtime a name is a service name, "
                "1-63 characters from a-z A-Z 0-9 _ - starting and ending with a letter or digit"
            )

    async def start(self, name: str) -> SwarmHandle:
        """Create the service `name`; returns at once (before it serves)."""
        self.check_name(name)
        await self._ensure_ready()
        try:
            return await asyncio.to_thread(self._create_sync, name)
        except (DockerException, requests.RequestException) as exc:
            raise ReplicaStartError(f"Cannot start replica '{name}': {exc}") from exc

    async def stop(self, handle: SwarmHandle) -> None:
        """Remove the service (by id: a new service under the same name is not touched); idempotent."""
        with self._lock:
            self._handles.pop(handle.service_id, None)
        if self._client is not None:
            await asyncio.to_thread(self._remove_sync, handle)

    def exited(self, handle: SwarmHandle) -> bool:
        """Never: the engine restarts a dead task under the same name; only a removal ends a replica."""
        return False

    async def adopt(self) -> list[SwarmHandle]:
        """Every replica service of this cluster."""
        return [handle for handle, _ in (await self.list_replicas()).values()]

    async def close(self) -> None:
        """Stop following events. The services stay: the engine holds them for every LB instance."""
        if self._follower is not None:
            await asyncio.to_thread(self._follower.stop)
        for client in {id(c): c for c in (self._events_client, self._client) if c is not None}.values():
            if self._owns_client:
                await asyncio.to_thread(client.close)
        self._client = self._events_client = None

    # ----- EngineRuntime ---------------------------------------------------------------------------
    async def watch(self) -> None:
        """Follow service events and our task containers' start/die events (once)."""
        await self._ensure_ready()
        if self._follower is not None:
            return
        self._follower = EventFollower(self._open_events, self._on_event, f"swarm-events-{self.cluster}")
        try:
            await asyncio.to_thread(self._follower.start)
        except (DockerException, requests.RequestException) as exc:
            self._follower = None
            raise ReplicaStartError(f"Cannot follow the engine's events: {exc}") from exc

    async def list_replicas(self) -> dict[str, tuple[SwarmHandle, TaskView | None]]:
        """Every replica service of this cluster with its current task, by name."""
        await self._ensure_ready()
        try:
            return await asyncio.to_thread(self._list_sync)
        except (DockerException, requests.RequestException) as exc:
            raise ReplicaStartError(f"Cannot list the engine's services: {exc}") from exc

    # ----- readiness -------------------------------------------------------------------------------
    async def _ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                self._loop = asyncio.get_running_loop()
                await asyncio.to_thread(self._prepare_sync)
                self._ready = True

    def _prepare_sync(self) -> None:
        """Connect, and check that this engine manages a swarm and that the network exists."""
        try:
            if self._client is None:
                self._client = self._client_source() if self._owns_client else self._client_source
            swarm = self._client.info().get("Swarm") or {}
            networks = [n.name for n in self._client.networks.list(names=[self.network])]
        except (DockerException, requests.RequestException) as exc:
            raise ReplicaStartError(f"Docker engine unavailable: {exc}") from exc
        if not swarm.get("ControlAvailable"):
            raise ReplicaStartError(
                "this Docker engine is not a swarm manager (`docker swarm init`, or place the LB on one)"
            )
        if self.network not in networks:  # the name filter matches substrings: compare exactly
            raise ReplicaStartError(
                f"overlay network {self.network!r} does not exist: deploy docker-stack.yml, which creates it "
                "and attaches the LB to it"
            )

    # ----- worker-thread bodies --------------------------------------------------------------------
    def _create_sync(self, name: str) -> SwarmHandle:
        labels = {self.label: self.cluster}
        try:
            service = self._client.services.create(
                self.image,
                name=name,
                labels=labels,
                container_labels=labels,
                env=[f"SERVER_ID={name}"],
                hostname=name,
                networks=[self.network],
                endpoint_spec=EndpointSpec(mode="dnsrr"),
                mode=ServiceMode("replicated", replicas=1),
                restart_policy=RestartPolicy(condition="any", delay=int(self.restart_delay * 1e9)),
                # The LB probes /heartbeat itself. An image health check would keep a new task out of
                # DNS until its first check passes (10 s with the replica image's interval).
                healthcheck=Healthcheck(test=["NONE"]),
            )
        except APIError as exc:
            if exc.status_code != 409:
                raise
            raise self._conflict_sync(name) from exc
        logger.info("replica %s: created service %s", name, service.id[:12])
        return self._handle_for(service.id, name)

    def _conflict_sync(self, name: str) -> Exception:
        """Why `name` could not be created: a peer instance made it, or it is someone else's."""
        try:
            service = self._client.services.get(name)
        except NotFound:  # removed between our create and this look-up
            return ReplicaStartError(f"Cannot start replica '{name}': its service came and went")
        labels = (service.attrs.get("Spec") or {}).get("Labels") or {}
        if service.name == name and labels.get(self.label) == self.cluster:
            return PeerCreatedError(
                f"Replica name '{name}' is already in use: another load balancer instance just created it"
            )
        return ReplicaExistsError(
            f"Cannot start replica '{name}': a service with that name exists and is not a replica "
            f"of this load balancer cluster ({self.label}={self.cluster})"
        )

    def _remove_sync(self, handle: SwarmHandle) -> None:
        try:
            self._client.api.remove_service(handle.service_id)
            logger.info("replica %s: removed service %s", handle.name, handle.service_id[:12])
        except NotFound:
            pass

    def _list_sync(self) -> dict[str, tuple[SwarmHandle, TaskView | None]]:
        services = self._client.api.services(filters={"label": f"{self.label}={self.cluster}"})
        ids = [s["ID"] for s in services]
        tasks = self._client.api.tasks(filters={"service": ids}) if ids else []
        current: dict[str, dict[str, Any]] = {}
        for task in tasks:
            sid = task.get("ServiceID", "")
            if sid in current and _task_rank(current[sid]) >= _task_rank(task):
                continue
            current[sid] = task
        return {
            s["Spec"]["Name"]: (
                self._handle_for(s["ID"], s["Spec"]["Name"]),
                _task_view(current.get(s["ID"])),
            )
            for s in services
        }

    def _handle_for(self, service_id: str, name: str) -> SwarmHandle:
        with self._lock:
            handle = self._handles.get(service_id)
            if handle is None:
                handle = SwarmHandle(name=name, host=name, port=self.CONTAINER_PORT, service_id=service_id)
                self._handles[service_id] = handle
            return handle

    # ----- events ----------------------------------------------------------------------------------
    def _open_events(self, since: float | None) -> Any:
        if self._events_client is None:
            # Its own connection when we can make one: the blocking read never shares a pool with calls.
            self._events_client = self._client_source() if self._owns_client else self._client
        filters = {"type": ["service", "container"]}
        return self._events_client.events(decode=True, filters=filters, since=since)

    def _on_event(self, event: Event) -> None:
        """Events thread: our service changes and our task containers' start/die become signals."""
        kind = (event.get("Type"), event.get("Action"))
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if kind in _TASK_CHANGES:
            if attributes.get(self.label) != self.cluster:
                return
            if kind[1] == "die":
                with self._lock:
                    handle = self._handles.get(attributes.get(_SERVICE_ID, ""))
                if handle is not None:
                    logger.warning(
                        "replica %s: task container died (exit code %s); the engine restarts it",
                        handle.name,
                        attributes.get("exitCode"),
                    )
                    self._call_soon(self._fire_exit, handle)
        elif kind not in _CHANGES:
            return
        self._call_soon(self._fire_change)

    def _call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the LB is shutting down
                loop.call_soon_threadsafe(callback, *args)

    def _fire_exit(self, handle: SwarmHandle) -> None:
        with self._lock:
            managed = self._handles.get(handle.service_id) is handle
        if managed and self.on_exit is not None:
            self.on_exit(handle)

    def _fire_change(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _task_rank(task: dict[str, Any]) -> tuple[bool, int]:
    """The current task: one the engine wants running, then the most recently changed."""
    return task.get("DesiredState") == "running", int((task.get("Version") or {}).get("Index") or 0)


def _task_view(task: dict[str, Any] | None) -> TaskView | None:
    if task is None:
        return None
    status = task.get("Status") or {}
    container = (status.get("ContainerStatus") or {}).get("ContainerID") or None
    return TaskView(
        state=str(status.get("State", "unknown")),
        desired_state=str(task.get("DesiredState", "unknown")),
        message=status.get("Err") or status.get("Message"),
        container=container[:12] if container else None,
        updated_at=task.get("UpdatedAt"),
    )


def create_swarm_runtime(settings: Settings, client: ClientSource = None) -> SwarmRuntime:
    """The swarm runtime as the settings describe it; connects lazily (no I/O here)."""
    prefix = settings.replica_prefix
    return SwarmRuntime(
        client if client is not None else docker.from_env,
        image=settings.docker_image,
        network=settings.swarm_network,
        label=settings.docker_label,
        cluster=settings.swarm_cluster,
        name_prefix=SwarmRuntime.DEFAULT_PREFIX if prefix is None else prefix,
        restart_delay=settings.swarm_restart_delay,
    )
