"""Where replicas run: local processes (default) or Docker containers, behind one interface."""

from __future__ import annotations

from typing import Any

from app.runtimes.base import ReplicaHandle, Runtime
from app.settings import Settings

__all__ = ["ReplicaHandle", "Runtime", "make_runtime"]


def make_runtime(settings: Settings) -> Runtime[Any]:
    """The runtime the settings name; the docker SDK is imported only when it is used."""
    if settings.runtime == "docker":
        from app.runtimes.docker import create_docker_runtime

        return create_docker_runtime(settings)
    from app.runtimes.process import ProcessRuntime

    return ProcessRuntime(settings.replica_host, settings.replica_command, settings.replica_prefix)
