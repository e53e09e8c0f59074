"""Rich renderables for the LB's answers. Every name and message goes in as Text, never as markup:
replica names are user input, and `[red]` in a name must print as those five characters."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, JustifyMethod, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "up": "green",
    "starting": "yellow",
    "replacing": "yellow",
    "draining": "yellow",
    "down": "red",
    "backoff": "red",
    "removed": "dim",
}
MISSING = "-"


def _cell(value: Any, style: str = "") -> Text:
    return Text(MISSING, style="dim") if value is None else Text(str(value), style=style)


def _number(value: Any, digits: int = 0) -> Text:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _cell(None)
    return Text(f"{value:,.{digits}f}", justify="right")


def _table(title: str) -> Table:
    """Every table alike: a title line, a rule under the header, no vertical lines (easy to grep)."""
    # min_width: rich wraps a title to its table's width, and a table of short columns would split it.
    return Table(
        title=Text(title),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        min_width=len(title),
    )


@dataclass(frozen=True)
class Column:
    """One column of `chlb status`: its header and how a /status row (and its req/s) fills it."""

    header: str
    cell: Callable[[Mapping[str, Any], float | None], Text]
    justify: JustifyMethod = "left"


def _state(row: Mapping[str, Any], rate: float | None) -> Text:
    state = str(row.get("state", "?"))
    return _cell(state, STATE_STYLES.get(state, ""))


COLUMNS = {
    "replica": Column("replica", lambda row, rate: _cell(row.get("name"), "bold")),
    "state": Column("state", _state),
    "ring": Column("ring", lambda row, rate: _cell("yes" if row.get("on_ring") else "no")),
    "address": Column("address", lambda row, rate: _cell(row.get("address"))),
    "pid": Column("pid", lambda row, rate: _cell(row.get("pid")), "right"),
    "restarts": Column("restarts", lambda row, rate: _number(row.get("restarts")), "right"),
    "requests": Column("requests", lambda row, rate: _number(row.get("requests")), "right"),
    "req/s": Column("req/s", lambda row, rate: _number(rate, 1), "right"),
    "in flight": Column("in flight", lambda row, rate: _number(row.get("in_flight")), "right"),
    "p99 ms": Column("p99 ms", lambda row, rate: _number(row.get("latency_p99_ms"), 1), "right"),
    "last error": Column("last error", lambda row, rate: _cell(row.get("last_error"), "red")),
}
WIDE = list(COLUMNS)
NARROW = ["replica", "state", "ring", "pid", "restarts", "requests", "req/s", "p99 ms", "last error"]
DROP_ORDER = ["pid", "ring", "restarts", "req/s", "p99 ms", "requests"]  # least useful first
ERROR_ROOM = 30  # the last error wraps at spaces in this many columns before other columns go


def status_table(
    body: Mapping[str, Any],
    rates: Mapping[str, float] | None = None,
    wide: bool = False,
    width: int | None = None,
    caption: str = "",
) -> Table:
    """GET /status as a table that fits in `width` columns (None: no limit, nothing cut).

    `rates` (requests/s per replica) need two polls, so only --watch has them (and the req/s column).
    `wide` shows every column; otherwise a narrow terminal loses those in DROP_ORDER first (the caption,
    under which `caption` goes, says which). Nothing is broken inside a word: the last error wraps at
    spaces, and a word or value that still does not fit ends in an ellipsis.
    """
    rows: list[dict[str, Any]] = list(body.get("replicas", []))
    up = sum(1 for row in rows if row.get("state") == "up")
    shown = list(WIDE if wide else NARROW)
    if rates is None and not wide:
        shown.remove("req/s")  # a column of dashes
    cells = {
        name: [COLUMNS[name].cell(row, (rates or {}).get(str(row.get("name")))) for row in rows]
        for name in shown
    }
    hidden = _narrowed(shown, cells, width) if width is not None and not wide else []
    table = _table(f"strategy {body.get('strategy', '?')}: {len(rows)} replicas, {up} up")
    if hidden:
        caption = f"hidden at {width} columns: {', '.join(hidden)} (--wide shows all)\n{caption}".strip()
    if caption:
        table.caption = Text(caption)
    for name in shown:
        wraps = name == "last error" and width is not None  # at spaces only: overflow is ellipsis
        table.add_column(
            COLUMNS[name].header,
            justify=COLUMNS[name].justify,
            no_wrap=not wraps,
            overflow="ellipsis",
        )
    for i in range(len(rows)):
        table.add_row(*(cells[name][i] for name in shown))
    return table


def _narrowed(shown: list[str], cells: Mapping[str, list[Text]], width: int) -> list[str]:
    """Remove from `shown` the columns that leave the last error less than ERROR_ROOM; return them."""

    def natural(name: str) -> int:
        return max([len(COLUMNS[name].header), *(cell.cell_len for cell in cells[name])])

    errors = [cell.cell_len for cell in cells.get("last error", [])]
    room = min(ERROR_ROOM, max([len("last error"), *errors]))
    hidden: list[str] = []
    for name in DROP_ORDER:
        others = [other for other in shown if other != "last error"]
        # SIMPLE_HEAD, no edge padding: one space at each edge, three between columns.
        if sum(map(natural, others)) + 3 * len(others) + 2 + room <= width:
            break
        if name in shown:
            shown.remove(name)
            hidden.append(name)
    return hidden


def natural_width(renderable: RenderableType) -> int:
    """How wide `renderable` is when nothing limits it (for --wide, which may exceed the terminal)."""
    console = Console(width=100_000, file=io.StringIO())
    return Measurement.get(console, console.options, renderable).maximum


def names(replicas: Iterable[str]) -> str:
    """Names joined with ", "; those with edge spaces or a comma quoted, so their spaces show."""
    return ", ".join(f"'{name}'" if name != name.strip() or "," in name else name for name in replicas)


def ring_table(body: Mapping[str, Any]) -> Table:
    """GET /ring: each member's share of the key sample, with a bar."""
    members: list[dict[str, Any]] = list(body.get("members", []))
    points = len(body.get("points", []))
    sample = body.get("sample_size", 0)
    title = f"strategy {body.get('strategy', '?')}: share of {sample:,} sampled keys"
    if points:
        title += f", {points} points on the circle"
    table = _table(title)
    table.add_column("replica")
    table.add_column("share", justify="right")
    table.add_column("")
    for member in members:
        share = float(member.get("share", 0.0))
        table.add_row(_cell(member.get("name"), "bold"), Text(f"{share:.1%}"), Text("#" * round(share * 40)))
    return table


def plan_table(body: Mapping[str, Any]) -> Table:
    """POST /ring/plan: how many sampled keys move, and between which replicas."""
    moved, sample = body.get("moved", 0), body.get("sample_size", 0)
    title = f"moves {moved:,} of {sample:,} sampled keys ({float(body.get('moved_share', 0.0)):.1%})"
    table = _table(title)
    table.add_column("from")
    table.add_column("to")
    table.add_column("keys", justify="right")
    for flow in body.get("flows", []):
        table.add_row(_cell(flow.get("from")), _cell(flow.get("to")), _number(flow.get("keys")))
    return table


def votes_table(counts: Mapping[str, int], mine: str) -> Table:
    """The vote counts after a vote, the caller's option marked."""
    total = sum(counts.values())
    table = _table(f"{total} votes")
    table.add_column("option")
    table.add_column("votes", justify="right")
    table.add_column("")
    for option, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(
            _cell(option, "bold" if option == mine else ""),
            _number(count),
            Text("your vote" if option == mine else "", style="green"),
        )
    return table
