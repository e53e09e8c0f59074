"""Where replicas run: local processes (default) or Docker containers, behind one interface."""

from __future__ import annotations

from app.runtimes.base import Orchestrator, ReplicaHandle
from app.settings import Settings

__all__ = ["Orchestrator", "ReplicaHandle", "make_orchestrator"]


def make_orchestrator(settings: Settings) -> Orchestrator:
    """The backend the settings name; the docker SDK is imported only when it is used."""
    if settings.backend == "docker":
        from app.runtimes.docker import create_docker_orchestrator

        return create_docker_orchestrator(settings)
    from app.runtimes.process import ProcessOrchestrator

    return ProcessOrchestrator(settings.replica_host, settings.replica_command, settings.replica_prefix)
