"""The `chlb` commands: one typer command per operation of the LB's HTTP API.

Exit codes: 0 ok, 1 the LB refused (401) or answered an error, 2 usage, 3 the LB is unreachable.
"""

from __future__ import annotations

import getpass
import re
import sys
import time
from contextlib import nullcontext
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.text import Text

from app.cli import render
from app.cli.client import DEFAULT_TIMEOUT, DEFAULT_URL, EXIT_OK, CliError
from app.cli.session import JsonOpt, Options, Session, TimeoutOpt, TokenOpt, UrlOpt, shares_options

HELP = f"""Operate a running chlb load balancer over HTTP (default {DEFAULT_URL}).

--url, --token, --timeout and --json go before or after the command: `chlb rep --url URL`.

Exit codes: 0 ok, 1 the LB refused (401: no or wrong token) or answered an error (its message is printed),
2 usage error, 3 the LB is unreachable or did not answer in time. Every error line names the LB's address.
"""

cli = typer.Typer(
    name="chlb",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: flags show as flags (typer's rich panels print `--json <bool>`).
    rich_markup_mode=None,
)


@cli.callback()
def options(
    ctx: typer.Context,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    as_json: JsonOpt = False,
) -> None:
    """Options shared by every command (also accepted after the command's name)."""
    ctx.obj = Options(url, token, timeout, as_json)


@cli.command()
@shares_options
def rep(session: Session) -> None:
    """List the replicas, one per line. The desired members, natural-sorted."""
    body = session.call("GET", "/rep")
    session.show(body, "\n".join(body["message"]["replicas"]))


NamesArg = Annotated[list[str] | None, typer.Argument(help="replica names", show_default=False)]
CountOpt = Annotated[
    int | None, typer.Option("-n", "--count", min=1, help="how many (default: the number of names, or 1)")
]


def _membership_change(session: Session, method: str, path: str, names: list[str], n: int | None) -> None:
    before = set(session.call("GET", "/rep")["message"]["replicas"])
    body = session.call(method, path, json={"n": n or max(1, len(names)), "hostnames": names})
    after: list[str] = body["message"]["replicas"]
    changed = [name for name in after if name not in before] or sorted(before - set(after))
    verb = "added" if path == "/add" else "removed"
    session.show(body, f"{verb}: {', '.join(changed) or '(none)'}\n{len(after)} replicas: {', '.join(after)}")


@cli.command()
@shares_options
def add(session: Session, names: NamesArg = None, n: CountOpt = None) -> None:
    """Add replicas. The NAMES given first, generated names for the rest: `chlb add -n 2 S5`."""
    _membership_change(session, "POST", "/add", names or [], n)


@cli.command()
@shares_options
def rm(session: Session, names: NamesArg = None, n: CountOpt = None) -> None:
    """Remove replicas. The NAMES given first, then the newest: `chlb rm S5`, `chlb rm -n 2`."""
    _membership_change(session, "DELETE", "/rm", names or [], n)


@cli.command()
@shares_options
def status(
    session: Session,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C (or a bound)")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between refreshes")] = 1.0,
    count: Annotated[int | None, typer.Option(min=1, help="with --watch: stop after this many")] = None,
    duration: Annotated[float | None, typer.Option(min=0.0, help="with --watch: stop after seconds")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="every column, nothing cut")] = False,
) -> None:
    """Each replica's state, requests, p99 and last error. --watch redraws it live."""
    if not watch:
        body = session.call("GET", "/status")
        # --wide: every column whole, however wide; else fitted to the terminal.
        table = render.status_table(body, wide=wide, width=None if wide else session.width)
        session.show(body, table, whole=wide)
        return
    code = watch_status(session, interval, count, duration, wide)
    raise typer.Exit(code)


def watch_status(
    session: Session, interval: float, count: int | None, duration: float | None, wide: bool = False
) -> int:
    """Poll /status; req/s come from the request counters of two polls. Returns the last poll's exit code."""
    deadline = None if duration is None else time.monotonic() + duration
    previous: tuple[float, dict[str, int]] | None = None
    polls, code, last_error = 0, EXIT_OK, ""
    live = session.console.is_terminal and not session.as_json
    with Live(console=session.console, auto_refresh=False) if live else nullcontext() as screen:
        try:
            while True:
                now = time.monotonic()
                try:
                    body = session.client.call("GET", "/status")
                except CliError as exc:
                    code, last_error = exc.code, exc.message
                    view: RenderableType = Text(f"chlb: {exc.message}", style="red")
                    body = None
                else:
                    code = EXIT_OK
                    counters = {r["name"]: r["requests"] for r in body["replicas"] if "requests" in r}
                    rates = _rates(previous, now, counters)
                    previous = (now, counters)
                    # A live table always fits: a terminal wrapping its lines would break the redraw.
                    width = None if wide and not live else session.width
                    updated = f"updated {time.strftime('%H:%M:%S')}, every {interval:g}s; Ctrl-C stops"
                    view = render.status_table(body, rates, wide, width, caption=updated)
                if isinstance(screen, Live):
                    screen.update(view, refresh=True)
                elif body is not None:
                    session.show(body, view, whole=wide)
                else:
                    sys.stderr.write(f"chlb: {last_error}\n")
                polls += 1
                if (count is not None and polls >= count) or (
                    deadline is not None and time.monotonic() + interval > deadline
                ):
                    break
                time.sleep(interval)  # pacing a display; nothing waits on it
        except KeyboardInterrupt:
            pass
    if code != EXIT_OK and live:
        sys.stderr.write(f"chlb: {last_error}\n")
    return code


def _rates(
    previous: tuple[float, dict[str, int]] | None, now: float, counters: dict[str, int]
) -> dict[str, float]:
    if previous is None or now <= previous[0]:
        return {}
    then, old = previous
    return {name: max(0, value - old[name]) / (now - then) for name, value in counters.items() if name in old}


@cli.command()
@shares_options
def ring(session: Session) -> None:
    """Each replica's share of a key sample. Ring strategies: the circle's points too."""
    body = session.call("GET", "/ring")
    session.show(body, render.ring_table(body))


@cli.command()
@shares_options
def route(session: Session, key: Annotated[str, typer.Argument(help="a request key (the id)")]) -> None:
    """Which replica serves KEY now. Also the replicas a retry would try next."""
    body = session.call("GET", "/route", params={"key": key})
    fallbacks = ", ".join(body.get("fallbacks", [])) or "none"
    session.show(body, f"{body['replica']}\nfallbacks: {fallbacks}")


@cli.command()
@shares_options
def plan(
    session: Session,
    add: Annotated[list[str] | None, typer.Option("--add", help="a name to add (repeat)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="a name to remove (repeat)")] = None,
) -> None:
    """What if: how many keys an add or remove would move. Changes nothing."""
    if not add and not remove:
        raise typer.BadParameter("give at least one --add NAME or --remove NAME")
    body = session.call("POST", "/ring/plan", json={"add": add or [], "remove": remove or []})
    session.show(body, render.plan_table(body))


@cli.command()
@shares_options
def reload(session: Session) -> None:
    """Re-read the settings and apply the live ones, as SIGHUP does. A bad file changes nothing."""
    body = session.call("POST", "/config/reload")
    lines = [f"applied: {', '.join(body['applied'])}" if body["applied"] else "no live setting changed"]
    if body["moved_share"] is not None:
        lines.append(f"keys moved to another replica: {body['moved_share']:.1%} of the sample")
    if body["restart_needed"]:
        lines.append(f"need a restart (running values kept): {', '.join(body['restart_needed'])}")
    session.show(body, "\n".join(lines))


VOTER_ID = re.compile(r"[^A-Za-z0-9_.:-]")


def default_voter() -> str:
    """`cli-<login name>`: one vote per user of this machine unless --voter says otherwise."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "anonymous"
    return "cli-" + VOTER_ID.sub("-", user)[:120]


@cli.command()
@shares_options
def vote(
    session: Session,
    option: Annotated[str, typer.Argument(help="e.g. docker, kubernetes, helm, prometheus")],
    voter: Annotated[
        str | None,
        typer.Option(envvar="CHLB_VOTER", help="voter id (default cli-<login>)", show_default=False),
    ] = None,
) -> None:
    """Vote for OPTION and show the counts. Vote again to change your vote."""
    body = session.call(
        "POST", "/api/vote", json={"option": option}, headers={"X-Voter-Id": voter or default_voter()}
    )
    session.show(body, render.votes_table(body["votes"], option))


def main() -> None:
    """Console-script entry point (`chlb`)."""
    cli()
