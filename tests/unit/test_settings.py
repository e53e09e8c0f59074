"""Settings read from LB_* variables, old names included."""

from __future__ import annotations

import pytest

from app.settings import Settings


@pytest.mark.parametrize("variable", ["LB_RUNTIME", "LB_BACKEND"])
def test_runtime_is_read_from_its_new_and_its_old_name(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "docker")
    assert Settings().runtime == "docker"


def test_runtime_defaults_to_local_processes() -> None:
    assert Settings().runtime == "process"
    assert Settings(runtime="docker").runtime == "docker"  # tests and embedders pass the field name


def test_drain_timeout_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_DRAIN_TIMEOUT", "2.5")
    assert Settings().drain_timeout == 2.5
