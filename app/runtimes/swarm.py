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
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from docker.errors import APIError, DockerException, NotFound
from docker.types import EndpointSpec, Healthcheck, RestartPolicy, ServiceMode

from app.errors import PeerCreatedError, ReplicaExistsError, ReplicaStartError
from app.runtimes.base import ReplicaHandle
from app.runtimes.docker_client import ClientSource, DockerClientBase, engine_options
from app.runtimes.docker_events import Event, EventFollower
from app.runtimes.engine import TaskView
from app.settings import Settings

logger = logging.getLogger(__name__)

_SERVICE_ID = "com.docker.swarm.service.id"
_CHANGES = {("service", "create"), ("service", "update"), ("service", "remove")}
_TASK_CHANGES = {("container", "start"), ("container", "die")}


@dataclass(eq=False)
class SwarmHandle(ReplicaHandle):
    """A replica service: reached by its name through Swarm's DNS, removed by its id."""

    service_id: str = field(default="", repr=False)


class SwarmRuntime(DockerClientBase):
    """Creates, lists and removes replica services; follows service and task-container events.

    `on_exit(handle)` is called on the event loop when a task's container dies (the engine restarts
    it; the LB takes it off the ring meanwhile); `on_change()` when the listing may have changed.
    """

    kind = "swarm"
    # Swarm's rule: a service name must be a DNS label (measured: "a.b" and "ab-" are refused).
    NAME_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?")
    NAME_RULE = (
        "a name is a service name, 1-63 characters from a-z A-Z 0-9 _ - starting and ending with "
        "a letter or digit"
    )

    def __init__(
        self,
        client: ClientSource,
        *,
        cluster: str,  # the LB cluster whose replicas these are (the label's value)
        label: str,
        network: str,  # an attachable overlay network the LB instances are on too
        image: str,
        name_prefix: str = DockerClientBase.DEFAULT_PREFIX,
        restart_delay: float = 0.5,
        stop_grace: float = 10.0,
    ) -> None:
        super().__init__(client, name_prefix)
        self.image = image
        self.network = network
        self.label = label
        self.cluster = cluster
        self.restart_delay = restart_delay
        # Seconds a stopped replica gets to finish the requests in flight (SIGTERM, then SIGKILL): a replica
        # removed by /rm keeps answering them, so it must be at least LB_DRAIN_TIMEOUT.
        self.stop_grace = stop_grace
        self.on_exit: Callable[[SwarmHandle], object] | None = None
        self.on_change: Callable[[], object] | None = None
        self._handles: dict[str, SwarmHandle] = {}  # service id -> handle, guarded by _lock

    # ----- Runtime protocol ------------------------------------------------------------------------
    async def start(self, name: str) -> SwarmHandle:
        """Create the service `name`; returns at once (before it serves)."""
        self.check_name(name)
        await self._ensure_ready()
        return await self._engine_call(f"Cannot start replica '{name}'", self._create_sync, name)

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
        return await self._engine_call("Cannot list the engine's services", self._list_sync)

    # ----- readiness -------------------------------------------------------------------------------
    def _prepare_sync(self) -> None:
        """Connect, and check that this engine manages a swarm and that the network exists."""
        try:
            self._connect_sync()
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
                stop_grace_period=int(self.stop_grace * 1e9),
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
    return SwarmRuntime(
        **engine_options(settings, client),
        network=settings.swarm_network,
        cluster=settings.swarm_cluster,
        restart_delay=settings.swarm_restart_delay,
        stop_grace=max(settings.drain_timeout, 10.0),  # Docker's default, or the drain when it is longer
    )
