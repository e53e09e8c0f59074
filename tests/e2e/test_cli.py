"""`chlb`, the command line, against real LBs: every command's output and exit code, and its errors."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from app.cli import render
from app.cli.commands import cli
from tests.lb_support import ROOT, LBFactory, RunningLB, start_lb, wait_until
from tests.ports import free_port

TOKEN = "cli-test-token"
WIDE = {"COLUMNS": "200"}  # rich wraps tables to the terminal; a test terminal is wide


@pytest.fixture(autouse=True)
def _no_cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CHLB_URL", "CHLB_TOKEN", "CHLB_VOTER"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLB]:
    """One LB with 3 replicas for the read-only commands."""
    running = start_lb(tmp_path_factory.mktemp("cli"))
    yield running
    running.stop()


def chlb(lb: RunningLB | str, *args: str, token: str | None = None, **env: str) -> Result:
    """Run `chlb --url <lb> args...` in-process, as a user would type it."""
    url = lb if isinstance(lb, str) else lb.url
    env = {**WIDE, "CHLB_URL": url, **({"CHLB_TOKEN": token} if token else {}), **env}
    return CliRunner().invoke(cli, list(args), env=env)


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_rep_prints_one_name_per_line(shared: RunningLB) -> None:
    result = chlb(shared, "rep")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Server 1\nServer 2\nServer 3\n"
    assert result.stderr == ""


def test_json_prints_the_lbs_answer(shared: RunningLB) -> None:
    import json

    result = chlb(shared, "--json", "rep")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == shared.client.get("/rep").json()


def test_status_is_a_table_of_every_replica(shared: RunningLB) -> None:
    result = chlb(shared, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "strategy rendezvous: 3 replicas, 3 up"
    header = next(line for line in lines if line.split()[:1] == ["replica"])
    # req/s needs two polls: only --watch has that column.
    assert header.split() == ["replica", "state", "ring", "pid", "restarts", "requests", "p99", "ms", "last",
                              "error"]  # fmt: skip
    pids = {name: row["pid"] for name, row in shared.status().items()}
    for name, pid in pids.items():
        row = next(line for line in lines if line.strip().startswith(name))
        assert row.split()[2:5] == ["up", "yes", str(pid)], row


def test_status_wide_adds_the_address(shared: RunningLB) -> None:
    result = chlb(shared, "status", "--wide")
    assert result.exit_code == 0
    for row in shared.status().values():
        assert row["address"] in result.stdout


def test_status_watch_stops_after_count_or_duration(shared: RunningLB) -> None:
    result = chlb(shared, "status", "--watch", "--count", "3", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("strategy rendezvous: 3 replicas, 3 up") == 3

    # --duration 0.5 at 0.1 s intervals: one poll at once, then at most one per interval until the bound.
    result = chlb(shared, "status", "-w", "--duration", "0.5", "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert 1 <= result.stdout.count("3 replicas, 3 up") <= 6


def test_status_watch_in_a_terminal_redraws_one_live_table(shared: RunningLB) -> None:
    result = chlb(shared, "status", "-w", "--count", "3", "--interval", "0.1", FORCE_COLOR="1")
    assert result.exit_code == 0, result.output
    assert "\x1b[1A\x1b[2K" in result.stdout  # each frame moves the cursor up over the last one
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert plain.count("Ctrl-C stops") >= 3  # three polls (rich draws the last frame once more on exit)
    assert "strategy rendezvous: 3 replicas, 3 up" in plain


def test_vote_records_and_shows_the_counts(shared: RunningLB) -> None:
    result = chlb(shared, "vote", "docker", "--voter", "cli-alice")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "docker" in line)
    assert row.split() == ["docker", "1", "your", "vote"]
    assert shared.client.get("/api/votes").json()["docker"] == 1

    result = chlb(shared, "vote", "emacs", "--voter", "cli-alice")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        f"chlb: {shared.url} answered 400 to POST /api/vote: "
        "Unknown option 'emacs'; valid options: kubernetes, docker, helm, prometheus"
    )


def test_add_and_rm_change_membership(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    result = chlb(lb, "add", "-n", "2", "S5")
    assert result.exit_code == 0, result.output
    assert result.stdout == "added: S5, Server 3\n4 replicas: S5, Server 1, Server 2, Server 3\n"
    assert lb.replicas() == ["S5", "Server 1", "Server 2", "Server 3"]

    result = chlb(lb, "add", "S6", "S7")  # -n defaults to the number of names
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added: S6, S7\n")

    result = chlb(lb, "rm", "S5")
    assert result.exit_code == 0, result.output
    assert result.stdout == "removed: S5\n5 replicas: S6, S7, Server 1, Server 2, Server 3\n"

    result = chlb(lb, "rm", "-n", "2")  # the newest first
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("removed: S6, S7\n")
    assert lb.replicas() == ["Server 1", "Server 2", "Server 3"]


def test_the_lbs_refusals_are_one_line_and_exit_1(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1")
    result = chlb(lb, "add", "Server 1")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        f"chlb: {lb.url} answered 409 to POST /add: Replica name 'Server 1' is already in use"
    )
    result = chlb(lb, "rm", "nobody")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(
        f"chlb: {lb.url} answered 400 to DELETE /rm: Replica name 'nobody' is not a member"
    )
    assert result.stdout == ""
    assert lb.replicas() == ["Server 1"]


def test_token_from_option_or_environment(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1", admin_token=TOKEN)
    result = chlb(lb, "add", "S2")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        f"chlb: {lb.url} answered 401 to POST /add: Missing or invalid admin token: "
        "send 'Authorization: Bearer <LB_ADMIN_TOKEN>' (pass --token or set CHLB_TOKEN)"
    )
    result = chlb(lb, "--token", "wrong", "add", "S2")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(f"chlb: {lb.url} answered 401 to POST /add: ")
    assert one_line(result.stderr).endswith("(the token was not accepted)")
    assert lb.replicas() == ["Server 1"]

    result = chlb(lb, "--token", TOKEN, "add", "S2")
    assert result.exit_code == 0, result.output
    result = chlb(lb, "rm", "S2", token=TOKEN)  # CHLB_TOKEN
    assert result.exit_code == 0, result.output
    assert lb.replicas() == ["Server 1"]
    assert chlb(lb, "rep").exit_code == 0  # reading needs no token


def test_an_unreachable_lb_exits_3(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="0")
    url = lb.url
    lb.stop()
    for args in (["rep"], ["status"], ["status", "--watch", "--count", "2", "--interval", "0.1"], ["add"]):
        result = chlb(url, *args)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.splitlines()[-1] == (
            f"chlb: {url}: cannot reach the load balancer: [Errno 111] Connection refused"
        )


def test_usage_errors_exit_2(shared: RunningLB) -> None:
    assert chlb(shared, "add", "-n", "0").exit_code == 2
    assert chlb(shared, "plan").exit_code == 2  # neither --add nor --remove
    assert chlb(shared, "status", "--interval", "0").exit_code == 2
    assert chlb(shared, "route").exit_code == 2  # KEY missing
    result = chlb("localhost:5000", "rep")  # no scheme
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("chlb: localhost:5000: not a usable --url: ")


def test_the_console_script_runs_the_cli(shared: RunningLB) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"chlb": "app.cli:main"}
    command = [sys.executable, "-m", "app.cli"]  # what the script runs: app.cli's main()
    ok = subprocess.run([*command, "--url", shared.url, "rep"], capture_output=True, text=True, cwd=ROOT)
    assert (ok.returncode, ok.stdout) == (0, "Server 1\nServer 2\nServer 3\n")
    down = f"http://127.0.0.1:{free_port()}"
    failed = subprocess.run([*command, "--url", down, "rep"], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 3
    assert failed.stdout == "" and failed.stderr.startswith(f"chlb: {down}: cannot reach the load balancer: ")


def test_route_names_the_replica_the_proxy_uses(shared: RunningLB) -> None:
    for key in ("alice", "42", "a key/with?odd=chars"):
        result = chlb(shared, "route", key)
        assert result.exit_code == 0, result.output
        body = shared.client.get("/route", params={"key": key}).json()
        assert result.stdout == f"{body['replica']}\nfallbacks: {', '.join(body['fallbacks'])}\n"
        assert result.stdout.splitlines()[0] == shared.serving(key)


def test_route_errors_exit_1(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="0")
    result = chlb(lb, "route", "alice")
    assert result.exit_code == 1
    message = lb.client.get("/route", params={"key": "alice"}).json()["message"].removeprefix("<Error> ")
    assert one_line(result.stderr) == f"chlb: {lb.url} answered 503 to GET /route: {message}"
    result = chlb(lb, "route", "")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(f"chlb: {lb.url} answered 400 to GET /route: ")


def test_ring_shows_each_members_share(shared: RunningLB) -> None:
    result = chlb(shared, "ring")
    assert result.exit_code == 0, result.output
    body = shared.client.get("/ring").json()
    lines = result.stdout.splitlines()
    assert lines[0].strip() == "strategy rendezvous: share of 10,000 sampled keys"
    for member in body["members"]:
        row = next(line for line in lines if line.strip().startswith(member["name"]))
        assert row.split()[2] == f"{member['share']:.1%}"


def test_plan_shows_what_would_move_and_changes_nothing(shared: RunningLB) -> None:
    result = chlb(shared, "plan", "--add", "S9", "--remove", "Server 1")
    assert result.exit_code == 0, result.output
    body = shared.client.post("/ring/plan", json={"add": ["S9"], "remove": ["Server 1"]}).json()
    lines = result.stdout.splitlines()
    assert lines[0].strip() == (
        f"moves {body['moved']:,} of {body['sample_size']:,} sampled keys ({body['moved_share']:.1%})"
    )
    rule = next(i for i, line in enumerate(lines) if line.strip().startswith("─"))
    assert lines[rule - 1].split() == ["from", "to", "keys"]
    flows = [line.split() for line in lines[rule + 1 :] if line.strip()]
    expected = [[*f["from"].split(), *f["to"].split(), f"{f['keys']:,}"] for f in body["flows"]]
    assert flows == expected
    assert shared.replicas() == ["Server 1", "Server 2", "Server 3"]

    result = chlb(shared, "plan", "--remove", "nobody")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(f"chlb: {shared.url} answered 400 to POST /ring/plan: ")


def test_status_counts_requests_and_watch_shows_their_rate(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="2")
    stop = threading.Event()

    def traffic() -> None:  # bounded: stops when the watch ends, or after 5,000 requests
        with httpx.Client(base_url=lb.url, timeout=5) as client:
            for i in range(5000):
                if stop.is_set():
                    return
                client.get("/home", params={"id": str(i)})

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        result = chlb(lb, "status", "--watch", "--count", "4", "--interval", "0.3")
    finally:
        stop.set()
        sender.join(timeout=30)
    assert result.exit_code == 0, result.output
    tables = result.stdout.split("strategy rendezvous")[1:]
    assert len(tables) == 4

    def cells(table: str, name: str) -> list[str]:
        row = next(line for line in table.splitlines() if line.strip().startswith(name))
        return row.split()[len(name.split()) :]  # state ring pid restarts requests req/s p99 [error]

    assert [cells(tables[0], n)[5] for n in ("Server 1", "Server 2")] == ["-", "-"]  # one poll: no rate yet
    later = [float(cells(t, n)[5].replace(",", "")) for t in tables[1:] for n in ("Server 1", "Server 2")]
    assert max(later) > 0
    status = lb.status()
    assert sum(row["requests"] for row in status.values()) > 0
    final = chlb(lb, "status")
    for name, row in lb.status().items():
        requests = int(cells(final.stdout, name)[4].replace(",", ""))
        assert requests == row["requests"] and requests > 0  # no traffic now: the counters stand still


def placed(position: str, command: list[str], option: list[str]) -> list[str]:
    """`option` typed before the command's name or after its arguments."""
    return [*option, *command] if position == "before" else [*command, *option]


@pytest.mark.parametrize("position", ["before", "after"])
def test_url_goes_before_or_after_the_command(shared: RunningLB, position: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # CHLB_URL points nowhere: only --url can reach the LB
    result = chlb(closed, *placed(position, ["rep"], ["--url", shared.url]))
    assert result.exit_code == 0, result.output
    assert result.stdout == "Server 1\nServer 2\nServer 3\n"


def test_an_option_after_the_command_wins_over_one_before(shared: RunningLB) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert chlb(shared, "--url", closed, "rep", "--url", shared.url).exit_code == 0
    result = chlb(shared, "--url", shared.url, "rep", "--url", closed)
    assert result.exit_code == 3
    assert one_line(result.stderr).startswith(f"chlb: {closed}: ")


@pytest.mark.parametrize("position", ["before", "after"])
def test_json_goes_before_or_after_the_command(shared: RunningLB, position: str) -> None:
    import json

    result = chlb(shared, *placed(position, ["route", "alice"], ["--json"]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == shared.client.get("/route", params={"key": "alice"}).json()


def test_token_goes_before_or_after_the_command(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1", admin_token=TOKEN)
    result = chlb(lb, *placed("before", ["add", "S2"], ["--token", TOKEN]))
    assert result.exit_code == 0, result.output
    assert lb.replicas() == ["S2", "Server 1"]
    result = chlb(lb, *placed("after", ["rm", "S2"], ["--token", TOKEN]), token="wrong")  # not CHLB_TOKEN
    assert result.exit_code == 0, result.output
    assert lb.replicas() == ["Server 1"]
    result = chlb(lb, *placed("after", ["rm", "Server 1"], ["--token", "wrong"]), token=TOKEN)
    assert result.exit_code == 1
    assert lb.replicas() == ["Server 1"]


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    from tests.ports import bind_loopback, port_of

    sock = bind_loopback()
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{port_of(sock)}"
    finally:
        sock.close()


@pytest.mark.parametrize("position", ["before", "after"])
def test_timeout_goes_before_or_after_the_command(silent_url: str, position: str) -> None:
    # Ignored, the default 30 s would show in the message (and take 30 s).
    result = chlb(silent_url, *placed(position, ["rep"], ["--timeout", "0.2"]))
    assert result.exit_code == 3
    assert one_line(result.stderr) == f"chlb: {silent_url}: no answer to GET /rep within 0.2s (ReadTimeout)"


def test_help_shows_flags_as_flags() -> None:
    for args in (["--help"], ["status", "--help"], ["rep", "--help"]):
        result = CliRunner().invoke(cli, args, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        options = {
            line.split()[0].rstrip(","): line for line in result.stdout.splitlines() if line[:3] == "  -"
        }
        assert re.match(r"\s+--url <str>\s", options["--url"])  # an option that takes a value says so
        for flag in ("--json", "--help", *(("-w",) if args[0] == "status" else ())):
            assert re.match(rf"\s+{flag}(, --\w+)?\s{{2,}}[a-zA-Z]", options[flag]), options[flag]
        assert "bool" not in result.stdout


LONG_NAME = "a replica whose name is long enough to squeeze the others!"  # 58 of the 64 allowed


def test_status_fits_80_columns_and_breaks_no_word(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1")
    assert chlb(lb, "add", LONG_NAME).exit_code == 0
    import os
    import signal

    os.kill(lb.status()["Server 1"]["pid"], signal.SIGKILL)  # a last error to show
    wait_until(lambda: lb.status()["Server 1"]["last_error"] and lb.status()["Server 1"]["state"] == "up")
    result = chlb(lb, "status", COLUMNS="80")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    # Every word the table may show, from the same answer rendered with no width limit.
    whole = Console(width=1000, file=io.StringIO())
    whole.print(render.status_table(lb.client.get("/status").json(), wide=True))
    caption = f"hidden at 80 columns: {', '.join(render.DROP_ORDER)} (--wide shows all)"
    words = set(whole.file.getvalue().split()) | set(caption.split())  # type: ignore[attr-defined]
    for word in " ".join(line for line in lines if "──" not in line).split():
        # Whole, or cut at the end of its cell: never a piece of a word on one line and the rest on the next.
        cut = word.endswith("…") and any(w.startswith(word[:-1]) for w in words)
        assert word in words or word + "," in words or cut, (word, result.stdout)
    row = next(i for i, line in enumerate(lines) if line.startswith(" Server 1 "))
    assert [lines[row].split()[-1], lines[row + 1].strip()] == ["replica", "exited"]  # wrapped at the space


def test_status_wide_cuts_nothing(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="1")
    assert chlb(lb, "add", LONG_NAME).exit_code == 0
    result = chlb(lb, "status", "--wide", COLUMNS="80")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    header = next(line for line in result.stdout.splitlines() if line.split()[:1] == ["replica"])
    assert header.split() == " ".join(render.COLUMNS).split()
    for name, row in lb.status().items():
        line = next(line for line in result.stdout.splitlines() if name in line)
        assert row["address"] in line


def test_errors_keep_the_spaces_of_quoted_names(shared: RunningLB) -> None:
    result = chlb(shared, "add", "  Server 1")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(
        f"chlb: {shared.url} answered 400 to POST /add: invalid replica name '  Server 1': "
    )


def test_reload_applies_the_file_and_says_what_changed(lb_factory: LBFactory, tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text('strategy = "rendezvous"\n')
    lb = lb_factory(replicas="2", config_file=str(config), admin_token=TOKEN)
    config.write_text('strategy = "ketama"\nheader_timeout = 4\nvote_options = ["a", "b"]\n')
    assert chlb(lb, "reload").exit_code == 1  # a reload is an admin's
    result = chlb(lb, "reload", token=TOKEN)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "applied: strategy, header_timeout"
    assert re.fullmatch(r"keys moved to another replica: \d+\.\d% of the sample", lines[1]), lines[1]
    assert lines[2] == "need a restart (running values kept): vote_options"
    config.write_text('strategy = "nope"\n')
    result = chlb(lb, "reload", token=TOKEN)
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith(
        f"chlb: {lb.url} answered 400 to POST /config/reload: Reload refused, nothing changed:"
        f" invalid setting strategy='nope' in {config}"
    )
