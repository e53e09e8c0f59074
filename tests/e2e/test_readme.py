"""The README as a newcomer reads it: short, the two commands first, a quick start that works as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from app.settings import Settings
from tests.lb_support import ROOT, LBFactory, RunningLB
from tests.polling import wait_until

README = ROOT / "README.md"
MAX_BYTES = 20_000  # a front door, not a reference: the reference lives in docs/
QUICK_START = "Quick start"
README_HOST = "localhost:5000"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
PID = "<pid>"
CHLB = ".venv/bin/chlb"


def readme() -> str:
    return README.read_text()


def section(text: str, title: str) -> str:
    """The text under `## <title>`, up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def commands(text: str) -> list[list[str]]:
    """The commands of every ```sh block in `text`, split as the shell would, comments dropped."""
    found = []
    for block in SH_BLOCK.findall(text):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                found.append(argv)
    return found


def starts_an_lb_or_changes_the_shell(argv: Sequence[str]) -> bool:
    """Lines not run here: the LB under test is running already, and `.` acts on the reader's shell."""
    while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # leading VAR=value assignments
        argv = argv[1:]
    return argv[:2] == ["make", "run"] or argv[1:3] == ["-m", "app"] or argv[:1] == ["."]


@dataclass
class Answer:
    """One curl line of the README and what it printed."""

    url: str
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def curl(argv: list[str], lb: RunningLB) -> Answer:
    """Run a README curl line against `lb`; --fail makes any 4xx or 5xx a non-zero exit."""
    args = [arg.replace(README_HOST, f"127.0.0.1:{lb.port}") for arg in argv[1:]]
    (url,) = [arg for arg in args if f"127.0.0.1:{lb.port}" in arg]
    done = subprocess.run(
        ["curl", "--fail-with-body", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, f"{shlex.join(argv)}\nexit {done.returncode}: {done.stderr}{done.stdout}"
    return Answer(url.split(f"127.0.0.1:{lb.port}", 1)[1], done.stdout)


def chlb(argv: list[str], lb: RunningLB) -> str:
    env = {**os.environ, "CHLB_URL": lb.url, "COLUMNS": "200"}
    env.pop("CHLB_TOKEN", None)
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{shlex.join(argv)}\nexit {done.returncode}: {done.stderr}{done.stdout}"
    return done.stdout


def kill_a_replica(argv: list[str], lb: RunningLB) -> tuple[str, int]:
    """`kill <pid>` with the pid of a replica from /status; returns its name and old pid."""
    name, row = next(iter(lb.status().items()))
    pid = row["pid"]
    done = subprocess.run([str(pid) if arg == PID else arg for arg in argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return name, pid


def replica_in(answer: Answer) -> str:
    """The replica that answered a proxied /home, parsed as the HTTP contract's clients do."""
    message: str = answer.json()["message"]
    assert message.startswith("Hello from Server: "), message
    return message.split(":")[-1].strip()


def test_readme_is_short_and_starts_with_make_run_and_make_test() -> None:
    text = readme()
    assert len(text.encode()) < MAX_BYTES, f"README.md is {len(text.encode())} bytes: move reference to docs/"
    first_block = SH_BLOCK.search(text)
    assert first_block and "\n## " not in text[: first_block.start()], "the commands come before any section"
    assert [argv[:2] for argv in commands(first_block.group(0))[:2]] == [["make", "run"], ["make", "test"]]


@pytest.mark.parametrize("document", ["README.md", "docs/settings.md"])
def test_every_setting_is_listed(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [f"LB_{name.upper()}" for name in Settings.model_fields if f"`LB_{name.upper()}`" not in text]
    assert missing == [], f"{document} does not list {missing} (app/settings.py has them)"


def test_the_quick_start_works_as_written(lb_factory: LBFactory) -> None:
    """Every command of the README's quick start, run against a real LB in place of localhost:5000."""
    lines = commands(section(readme(), QUICK_START))
    lb = lb_factory()
    answers: list[Answer] = []
    killed: tuple[str, int] | None = None
    for argv in lines:
        if starts_an_lb_or_changes_the_shell(argv):
            continue
        if argv[0] == "curl":
            answers.append(curl(argv, lb))
        elif argv[0] == CHLB:
            shown = chlb(argv, lb)
            if killed and argv[1:2] == ["status"]:  # after the kill: the same name is back, with a new pid
                name = killed[0]
                assert name in shown and str(lb.status()[name]["pid"]) in shown, shown
        elif argv[:2] == ["kill", PID]:
            killed = kill_a_replica(argv, lb)
            name, old_pid = killed

            def back(name: str = name, old_pid: int = old_pid) -> bool:
                row = lb.status()[name]
                return row["state"] == "up" and row["on_ring"] and row["pid"] not in (None, old_pid)

            wait_until(back, timeout=30)
            assert lb.status()[name]["restarts"] == 1
        else:
            raise AssertionError(f"the quick start has a command this test does not know: {shlex.join(argv)}")
    assert killed, "the quick start shows how to kill a replica (kill <pid>)"

    by_path: dict[str, list[Answer]] = {}
    for answer in answers:
        by_path.setdefault(answer.url.split("?")[0], []).append(answer)
    assert {"/rep", "/home", "/route", "/api/vote"} <= by_path.keys(), "it shows the ring and a vote"

    (rep,) = by_path["/rep"]
    assert rep.json()["message"]["replicas"] == ["Server 1", "Server 2", "Server 3"]
    homes: dict[str, list[str]] = {}
    for answer in by_path["/home"]:
        homes.setdefault(answer.url, []).append(replica_in(answer))
    repeated = [replicas for replicas in homes.values() if len(replicas) > 1]
    assert repeated, "the quick start sends one key twice"
    assert all(len(set(replicas)) == 1 for replicas in repeated), f"a key reached two replicas: {homes}"
    for answer in by_path["/route"]:
        route = answer.json()
        home = homes.get(f"/home?id={route['key']}")
        assert home is None or home[0] == route["replica"], (route, home)
    for answer in by_path["/api/vote"]:
        assert answer.json()["votes"]["docker"] >= 1, answer.body
