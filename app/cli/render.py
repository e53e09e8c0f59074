"""Rich renderables for the LB's answers. Every name and message goes in as Text, never as markup:
replica names are user input, and `[red]` in a name must print as those five characters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich import box
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


def status_table(
    body: Mapping[str, Any], rates: Mapping[str, float] | None = None, wide: bool = False
) -> Table:
    """GET /status as a table; `rates` (requests/s per replica) need two polls, so only --watch has them."""
    rows: list[dict[str, Any]] = list(body.get("replicas", []))
    up = sum(1 for row in rows if row.get("state") == "up")
    title = f"strategy {body.get('strategy', '?')}: {len(rows)} replicas, {up} up"
    table = _table(title)
    table.add_column("replica", no_wrap=True)
    for header in ("state", "ring"):
        table.add_column(header, no_wrap=True)
    if wide:
        table.add_column("address", no_wrap=True)
    for header in ("pid", "restarts", "requests", "req/s", *(("in flight",) if wide else ()), "p99 ms"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold", ratio=1)
    for row in rows:
        state = str(row.get("state", "?"))
        rate = (rates or {}).get(str(row.get("name")))
        table.add_row(
            _cell(row.get("name"), "bold"),
            _cell(state, STATE_STYLES.get(state, "")),
            _cell("yes" if row.get("on_ring") else "no"),
            *((_cell(row.get("address")),) if wide else ()),
            _cell(row.get("pid")),
            _number(row.get("restarts")),
            _number(row.get("requests")),
            _number(rate, 1),
            *((_number(row.get("in_flight")),) if wide else ()),
            _number(row.get("latency_p99_ms"), 1),
            _cell(row.get("last_error"), "red"),
        )
    return table


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
