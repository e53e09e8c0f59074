"""Run the same LB tests on each runtime: local processes and Docker containers.

A `RuntimeUnderTest` gives the LB settings for one runtime and the replica names to expect. Docker names get a
per-LB token, so LBs on one engine (and parallel test runs) never adopt each other's containers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.control.naming import natural_key


@dataclass
class RuntimeUnderTest:
    """Settings and naming for LBs on one runtime."""

    kind: str
    request: pytest.FixtureRequest
    token: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    _children: list[RuntimeUnderTest] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"t{self.token}-server" if self.kind == "docker" else "Server "

    def fresh(self) -> RuntimeUnderTest:
        """Settings for one more LB (Docker: its own label, network and names)."""
        if self.kind == "process":
            return self
        image: str = self.request.getfixturevalue("replica_image")
        token = uuid.uuid4().hex[:6]
        child = RuntimeUnderTest(
            "docker",
            self.request,
            token,
            {
                "runtime": "docker",
                "docker_image": image,
                "docker_network": f"chlb-test-{token}",
                "docker_label": f"chlb.test.{token}",
                "replica_prefix": f"t{token}-server",
            },
        )
        self._children.append(child)
        return child

    def gen(self, *numbers: int) -> list[str]:
        """Generated names, e.g. gen(1, 2) -> ["Server 1", "Server 2"]."""
        return [f"{self.prefix}{k}" for k in numbers]

    def host(self, name: str) -> str:
        """A user-chosen name, made unique per LB on Docker."""
        return f"t{self.token}-{name}" if self.kind == "docker" else name

    def cleanup(self) -> None:
        """Remove every container and network the LBs on this runtime left (they should leave none)."""
        if self.kind != "docker" or not self._children:
            return
        from tests.docker_support import DockerScope

        client: Any = self.request.getfixturevalue("docker_engine")
        for child in self._children:
            s = child.settings
            DockerScope(
                client, s["docker_image"], child.token, s["docker_label"], s["docker_network"], ""
            ).cleanup()


def natural(names: list[str]) -> list[str]:
    """The order /rep uses."""
    return sorted(names, key=natural_key)


RUNTIMES = ["process", pytest.param("docker", marks=pytest.mark.docker)]
