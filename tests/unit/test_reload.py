"""What a reload changes: live settings apply, restart-only ones are reported and keep their running value."""

from __future__ import annotations

from pydantic import SecretStr

from app.reload import LIVE, changes, describe, in_force, settings_view
from app.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_changes_split_into_live_and_restart_only_in_field_order() -> None:
    old = settings()
    new = settings(header_timeout=3, port=6000, strategy="ketama", workers=2)
    assert changes(old, new) == (["strategy", "header_timeout"], ["port", "workers"])
    assert changes(old, settings()) == ([], [])


def test_in_force_takes_the_new_live_values_and_keeps_the_running_rest() -> None:
    old = settings(port=5000)
    new = settings(port=6000, header_timeout=3.0)
    new._origins = {"port": "file", "header_timeout": "file"}
    applied, _ = changes(old, new)
    running = in_force(old, new, applied)
    assert (running.port, running.header_timeout) == (5000, 3.0)
    assert running.origins["header_timeout"] == "file" and running.origins["port"] == "default"


def test_a_value_that_returns_to_its_default_says_so() -> None:
    old = settings(header_timeout=3.0)
    old._origins = {"header_timeout": "file"}
    new = settings()
    running = in_force(old, new, changes(old, new)[0])
    assert running.header_timeout == 10.0 and running.origins["header_timeout"] == "default"


def test_what_needs_a_restart() -> None:
    for name in (
        "host",
        "port",
        "fd",
        "workers",
        "runtime",
        "replicas",
        "db_path",
        "votes_url",
        "vote_options",
    ):
        assert name not in LIVE, name
    for name in ("strategy", "header_timeout", "balance_factor", "admin_token", "access_log", "read_timeout"):
        assert name in LIVE, name
    assert LIVE <= set(Settings.model_fields)


def test_secrets_are_shown_as_set_or_unset_only() -> None:
    view = settings_view(settings(admin_token=SecretStr("hunter2")))
    assert view["admin_token"] == "**********" and view["votes_password"] is None
    assert "hunter2" not in str(view) and view["strategy"] == "rendezvous"


def test_the_log_line_names_what_moved_and_what_waits() -> None:
    line = describe("SIGHUP", ["strategy"], ["workers"], 0.671)
    assert line == (
        "configuration reloaded (SIGHUP); applied: strategy;"
        " 67.1% of the sampled keys moved to another replica;"
        " need a restart to take effect (running values kept): workers"
    )
    assert describe("SIGHUP", [], [], None) == "configuration reloaded (SIGHUP); no live setting changed"
