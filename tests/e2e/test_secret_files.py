"""Secrets from files on a real LB: the admin token from LB_ADMIN_TOKEN_FILE guards /add and /rm, and a
file that cannot be read stops `python -m app` with one line and exit status 2, the secret never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lb_support import LBFactory

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "file-token-8f2d"


def test_the_token_from_a_file_guards_the_admin_routes(lb_factory: LBFactory, tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(f"{TOKEN}\n")
    lb = lb_factory(replicas="1", admin_token_file=str(token_file))
    body = {"n": 1, "hostnames": ["extra"]}
    right, wrong = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}
    assert lb.client.post("/add", json=body).status_code == 401
    assert lb.client.post("/add", json=body, headers=wrong).status_code == 401
    assert lb.client.post("/add", json=body, headers=right).status_code == 200  # without the newline
    assert lb.client.request("DELETE", "/rm", json=body, headers=right).status_code == 200
    assert TOKEN not in lb.log()


def test_an_unreadable_token_file_stops_the_lb_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_ADMIN_TOKEN_FILE=str(missing), LB_DB_PATH=str(tmp_path / "votes.sqlite3"), LB_PORT="0")
    done = subprocess.run(
        [sys.executable, "-m", "app"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "LB_ADMIN_TOKEN_FILE" in line]
    reason = "cannot be read: No such file or directory"
    assert lines == [f"invalid settings: LB_ADMIN_TOKEN_FILE={missing} {reason}"]
