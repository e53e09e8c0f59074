"""The options every command shares (--url, --token, --timeout, --json), before or after its name.

typer has no option group shared by commands: `shares_options` adds the four to each command's
signature, so `chlb --url U rep` and `chlb rep --url U` both parse; those typed after the command's
name win over those typed before it, and the command gets one merged `Session`.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, RenderableType

from app.cli import render
from app.cli.client import DEFAULT_TIMEOUT, DEFAULT_URL, CliError, LBClient

UrlOpt = Annotated[str, typer.Option("--url", envvar="CHLB_URL", help="where the LB listens")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CHLB_TOKEN",
        help="admin token, sent as 'Authorization: Bearer'",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="seconds to wait for each answer")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the LB's JSON answer as it is")]


@dataclass(frozen=True)
class Options:
    """The shared options' values; the parameter names are the fields'."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    as_json: bool = False


OPTION_TYPES: dict[str, Any] = {"url": UrlOpt, "token": TokenOpt, "timeout": TimeoutOpt, "as_json": JsonOpt}
SHARED = [field.name for field in fields(Options)]
assert SHARED == list(OPTION_TYPES)


@dataclass
class Session:
    """What every command shares: the client, the output mode and the console."""

    client: LBClient
    as_json: bool
    console: Console

    @classmethod
    def open(cls, options: Options) -> Session:
        # highlight=False: rich would colour numbers inside replica names and error texts.
        return cls(
            LBClient(options.url, options.token, options.timeout), options.as_json, Console(highlight=False)
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The LB's answer, or one line on stderr and the exit code."""
        try:
            return self.client.call(method, path, **kwargs)
        except CliError as exc:
            fail(exc)

    def show(self, body: Any, renderable: RenderableType | str, whole: bool = False) -> None:
        """The raw JSON with --json (for scripts), else the human view (`whole`: never cut to fit)."""
        if self.as_json:
            typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        elif isinstance(renderable, str):
            typer.echo(renderable)
        else:
            if whole:  # wider than the terminal if need be, rather than cut (`status --wide`)
                self.console.width = max(self.console.width, render.natural_width(renderable))
            self.console.print(renderable)

    @property
    def width(self) -> int:
        """The terminal's width in columns (COLUMNS, else 80 when not a terminal)."""
        return self.console.width


def fail(exc: CliError) -> NoReturn:
    """Report on stderr (one line, no markup: the text may come from the server) and exit."""
    sys.stderr.write(f"chlb: {exc.message}\n")
    raise typer.Exit(exc.code)


def typed_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option `name` was typed (not taken from its environment variable or default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def shares_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command(session, ...)` as a typer command that also takes the shared options after its name.

    The options typed before the name are on `ctx.obj` (the group's callback puts an `Options` there);
    any typed after it replace them. The signature typer reads (`__signature__`) is the command's own
    parameters but `session`, then the context and the four options.
    """
    own = dict(inspect.signature(command, eval_str=True).parameters)
    assert next(iter(own), None) == "session", f"{command.__name__}: the first parameter must be `session`"
    del own["session"]
    assert not {"ctx", *SHARED} & set(own), f"{command.__name__}: a parameter name is taken"
    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [inspect.Parameter("ctx", keyword, annotation=typer.Context)] + [
        inspect.Parameter(name, keyword, default=getattr(Options(), name), annotation=OPTION_TYPES[name])
        for name in SHARED
    ]

    @functools.wraps(command)
    def run(ctx: typer.Context, **kwargs: Any) -> None:
        after = {name: kwargs.pop(name) for name in SHARED}
        before: Options = ctx.obj if isinstance(ctx.obj, Options) else Options()
        merged = replace(before, **{k: v for k, v in after.items() if typed_on_command_line(ctx, k)})
        command(Session.open(merged), **kwargs)

    parameters = [*own.values(), *added]
    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run
