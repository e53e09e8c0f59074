"""The `chlb` commands: one typer command per operation of the LB's HTTP API.

Exit codes: 0 ok, 1 the LB refused (401) or answered an error, 2 usage, 3 the LB is unreachable.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from app.cli import render
from app.cli.client import DEFAULT_URL, EXIT_OK, CliError, LBClient

HELP = f"""Operate a running chlb load balancer over HTTP (default {DEFAULT_URL}).

Exit codes: 0 ok, 1 the LB refused (401: no or wrong token) or answered an error (its message is printed),
2 usage error, 3 the LB is unreachable or did not answer in time.
"""

cli = typer.Typer(
    name="chlb",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class Session:
    """What every command shares: the client, the output mode and the console."""

    client: LBClient
    as_json: bool
    console: Console

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The LB's answer, or one line on stderr and the exit code."""
        try:
            return self.client.call(method, path, **kwargs)
        except CliError as exc:
            fail(exc)

    def show(self, body: Any, renderable: RenderableType | str) -> None:
        """The raw JSON with --json (for scripts), else the human view."""
        if self.as_json:
            typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        elif isinstance(renderable, str):
            typer.echo(renderable)
        else:
            self.console.print(renderable)


def fail(exc: CliError) -> NoReturn:
    """Report on stderr (one line, no markup: the text may come from the server) and exit."""
    sys.stderr.write(f"chlb: {exc.message}\n")
    raise typer.Exit(exc.code)


def session_of(ctx: typer.Context) -> Session:
    session: Session = ctx.obj
    return session


@cli.callback()
def options(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="CHLB_URL", help="where the LB listens")] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="CHLB_TOKEN", help="admin token, sent as 'Authorization: Bearer'", show_default=False
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for each answer")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the LB's JSON answer as it is")] = False,
) -> None:
    """Options shared by every command."""
    # highlight=False: rich would colour numbers inside replica names and error texts.
    ctx.obj = Session(LBClient(url, token, timeout), as_json, Console(highlight=False))


@cli.command()
def rep(ctx: typer.Context) -> None:
    """List the replicas (the desired members, natural-sorted), one per line."""
    session = session_of(ctx)
    body = session.call("GET", "/rep")
    session.show(body, "\n".join(body["message"]["replicas"]))


NamesArg = Annotated[list[str] | None, typer.Argument(help="replica names", show_default=False)]
CountOpt = Annotated[
    int | None, typer.Option("-n", "--count", min=1, help="how many (default: the number of names, or 1)")
]


def _membership_change(ctx: typer.Context, method: str, path: str, names: list[str], n: int | None) -> None:
    session = session_of(ctx)
    before = set(session.call("GET", "/rep")["message"]["replicas"])
    body = session.call(method, path, json={"n": n or max(1, len(names)), "hostnames": names})
    after: list[str] = body["message"]["replicas"]
    changed = [name for name in after if name not in before] or sorted(before - set(after))
    verb = "added" if path == "/add" else "removed"
    session.show(body, f"{verb}: {', '.join(changed) or '(none)'}\n{len(after)} replicas: {', '.join(after)}")


@cli.command()
def add(ctx: typer.Context, names: NamesArg = None, n: CountOpt = None) -> None:
    """Add replicas: the NAMES given first, generated names for the rest (`chlb add -n 2 S5`)."""
    _membership_change(ctx, "POST", "/add", names or [], n)


@cli.command()
def rm(ctx: typer.Context, names: NamesArg = None, n: CountOpt = None) -> None:
    """Remove replicas: the NAMES given first, then the newest (`chlb rm S5`, `chlb rm -n 2`)."""
    _membership_change(ctx, "DELETE", "/rm", names or [], n)


@cli.command()
def status(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until Ctrl-C (or a bound)")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between refreshes")] = 1.0,
    count: Annotated[int | None, typer.Option(min=1, help="with --watch: stop after this many")] = None,
    duration: Annotated[float | None, typer.Option(min=0.0, help="with --watch: stop after seconds")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="also the address and requests in flight")] = False,
) -> None:
    """Per-replica state, restarts, requests, p99 and last error; --watch shows a live table."""
    session = session_of(ctx)
    if not watch:
        body = session.call("GET", "/status")
        session.show(body, render.status_table(body, wide=wide))
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
                    table = render.status_table(body, rates, wide)
                    table.caption = f"updated {time.strftime('%H:%M:%S')}, every {interval:g}s; Ctrl-C stops"
                    view = table
                if isinstance(screen, Live):
                    screen.update(view, refresh=True)
                elif body is not None:
                    session.show(body, view)
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
def ring(ctx: typer.Context) -> None:
    """Each replica's share of a key sample (and the circle's points for ring strategies)."""
    session = session_of(ctx)
    body = session.call("GET", "/ring")
    session.show(body, render.ring_table(body))


@cli.command()
def route(ctx: typer.Context, key: Annotated[str, typer.Argument(help="a request key (the id)")]) -> None:
    """Which replica serves KEY now, and the replicas a retry would try next."""
    session = session_of(ctx)
    body = session.call("GET", "/route", params={"key": key})
    fallbacks = ", ".join(body.get("fallbacks", [])) or "none"
    session.show(body, f"{body['replica']}\nfallbacks: {fallbacks}")


@cli.command()
def plan(
    ctx: typer.Context,
    add: Annotated[list[str] | None, typer.Option("--add", help="a name to add (repeat)")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="a name to remove (repeat)")] = None,
) -> None:
    """What if: how many keys an add or remove would move, without changing anything."""
    if not add and not remove:
        raise typer.BadParameter("give at least one --add NAME or --remove NAME")
    session = session_of(ctx)
    body = session.call("POST", "/ring/plan", json={"add": add or [], "remove": remove or []})
    session.show(body, render.plan_table(body))


VOTER_ID = re.compile(r"[^A-Za-z0-9_.:-]")


def default_voter() -> str:
    """`cli-<login name>`: one vote per user of this machine unless --voter says otherwise."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "anonymous"
    return "cli-" + VOTER_ID.sub("-", user)[:120]


@cli.command()
def vote(
    ctx: typer.Context,
    option: Annotated[str, typer.Argument(help="e.g. docker, kubernetes, helm, prometheus")],
    voter: Annotated[
        str | None,
        typer.Option(envvar="CHLB_VOTER", help="voter id (default cli-<login>)", show_default=False),
    ] = None,
) -> None:
    """Vote for OPTION (again to change the vote) and show the counts."""
    session = session_of(ctx)
    body = session.call(
        "POST", "/api/vote", json={"option": option}, headers={"X-Voter-Id": voter or default_voter()}
    )
    session.show(body, render.votes_table(body["votes"], option))


def main() -> None:
    """Console-script entry point (`chlb`)."""
    cli()
