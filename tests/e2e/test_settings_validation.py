"""Every setting is checked before anything starts: one line per problem, exit 2, no traceback, no replica."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lb_support import ROOT, LBFactory, descendants
from tests.ports import free_port

START_TIMEOUT = 60


def run_lb(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python -m app` with these LB_* settings (lower-case keys); it is expected to stop by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_HOST="127.0.0.1", LB_PORT=str(free_port()), LB_DB_PATH=str(tmp_path / "votes.sqlite3"))
    env.update({f"LB_{key.upper()}": value for key, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [expected], done.stderr


@pytest.mark.parametrize(
    ("settings", "line"),
    [
        (
            {"replicas": "100"},
            "invalid settings: LB_REPLICAS=100 is more than LB_MAX_REPLICAS=50; "
            "lower the first or raise the second",
        ),
        (
            {"vote_options": "notjson"},
            "invalid setting LB_VOTE_OPTIONS='notjson': not valid JSON (Expecting value); "
            'write a JSON list such as ["a", "b"]',
        ),
        (
            {"vote_options": "[]"},
            "invalid setting LB_VOTE_OPTIONS='[]': at least one vote option is required",
        ),
        (
            {"vote_options": '["a", "b", "a"]'},
            """invalid setting LB_VOTE_OPTIONS='["a", "b", "a"]': duplicate vote options ['a']: """
            "each option must be named once",
        ),
        (
            {"replica_command": "python -m x"},
            "invalid setting LB_REPLICA_COMMAND='python -m x': not valid JSON (Expecting value); "
            'write a JSON list such as ["a", "b"]',
        ),
    ],
)
def test_bad_values_are_one_line_and_exit_2(tmp_path: Path, settings: dict[str, str], line: str) -> None:
    assert_one_line(run_lb(tmp_path, **settings), line)


def test_db_path_must_be_creatable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = run_lb(tmp_path, db_path=str(blocker / "data" / "votes.sqlite3"))
    assert_one_line(
        done,
        f"invalid setting LB_DB_PATH='{blocker}/data/votes.sqlite3': "
        f"{blocker} is not a directory, so {blocker}/data/votes.sqlite3 cannot be created",
    )
    done = run_lb(tmp_path, db_path=str(tmp_path))
    assert_one_line(
        done, f"invalid setting LB_DB_PATH='{tmp_path}': {tmp_path} exists but is not a writable file"
    )


@pytest.mark.parametrize("path", ["/proc/nope/votes.sqlite3", "/proc/votes.sqlite3"])
def test_a_db_path_that_cannot_be_opened_is_one_line_before_any_replica(tmp_path: Path, path: str) -> None:
    """Paths the settings' checks cannot foresee (the kernel's /proc looks writable to root)."""
    done = run_lb(tmp_path, db_path=path, log_level="debug")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"invalid setting LB_DB_PATH='{path}': cannot open the vote store ("), line
    assert "replica" not in done.stdout + done.stderr


def test_an_unknown_variable_is_one_warning_naming_the_closest_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the LB then stops by itself, right after the warning
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_lb(tmp_path, port=str(taken.getsockname()[1]), stratgy="ketama")
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, done.stderr
    assert warnings[0].endswith(
        "LB_STRATGY (from the environment) is not a setting and is ignored; did you mean LB_STRATEGY?"
    )


def test_a_taken_port_fails_before_any_replica_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_lb(tmp_path, port=str(port), log_level="debug")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "replica" not in done.stdout + done.stderr  # nothing was started, not even logged


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_lb_exits_0_and_leaves_no_temporary_directory(
    lb_factory: LBFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the LB's temporary files (multiprocessing's pymp-*) go here
    lb = lb_factory(replicas="1")
    assert descendants(lb.proc.pid), "the LB started no replica"
    assert list(temp.iterdir()), "the fork server's socket directory was expected under TMPDIR"
    lb.proc.send_signal(sig)
    assert lb.proc.wait(30) == 0, lb.log()
    assert list(temp.iterdir()) == []
