"""Where replicas run: local processes (default), Docker containers or Swarm services, behind one seam."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.runtimes.base import ReplicaHandle, Runtime

if TYPE_CHECKING:  # the fork server imports this package before its lifeline: keep it light
    from app.settings import Settings

__all__ = ["ReplicaHandle", "Runtime", "make_runtime"]


def make_runtime(settings: Settings) -> Runtime[Any]:
    """The runtime the settings name; the docker SDK is imported only when it is used."""
    if settings.runtime == "swarm":
        from app.runtimes.swarm import create_swarm_runtime

        return create_swarm_runtime(settings)
    if settings.runtime == "docker":
        from app.runtimes.docker import create_docker_runtime

        return create_docker_runtime(settings)
    from app.runtimes.process import ProcessRuntime

    return ProcessRuntime(settings.replica_host, settings.replica_command, settings.replica_prefix)
