"""render: `chlb status` fitted to a width without breaking a word, --wide whole, names keep their spaces."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from app.cli import render
from app.cli.client import one_line

ERROR = "replica exited after 3 failed heartbeats while the proxy was connecting"
BODY: dict[str, Any] = {
    "strategy": "rendezvous",
    "replicas": [
        {"name": "Server 1", "state": "up", "on_ring": True, "pid": 123456, "restarts": 2, "requests": 123456,
         "latency_p99_ms": 12.345, "last_error": ERROR, "address": "127.0.0.1:40001", "in_flight": 0},
        {"name": "  Server 2", "state": "replacing", "on_ring": False, "pid": None, "restarts": 0,
         "requests": 0, "latency_p99_ms": None, "last_error": None, "address": "127.0.0.1:40002",
         "in_flight": 3},
    ],
}  # fmt: skip


def shown(width: int | None, wide: bool = False) -> list[str]:
    table = render.status_table(BODY, wide=wide, width=width)
    console = Console(width=width or render.natural_width(table), highlight=False, record=True)
    console.print(table)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 60, 40])
def test_status_fits_the_width_and_wraps_the_error_at_spaces(width: int) -> None:
    lines = shown(width)
    assert max(map(len, lines)) <= width
    caption = f"hidden at {width} columns: {', '.join(render.DROP_ORDER)} (--wide shows all)"
    words = set(" ".join(shown(None, wide=True)).split()) | set(caption.split())
    for word in " ".join(line for line in lines if "──" not in line).split():
        assert word in words or word + "," in words, (word, lines)
    assert all(word in " ".join(lines).split() for word in ERROR.split())  # every word of it, whole


def test_status_names_the_columns_a_narrow_terminal_hides() -> None:
    lines = shown(80)
    header = next(line for line in lines if line.split()[:1] == ["replica"])
    assert "pid" not in header.split() and "ring" not in header.split()
    assert lines[-1].strip().startswith("hidden at 80 columns: pid, ring")
    assert not any(line.strip().startswith("hidden") for line in shown(200))


def test_status_wide_shows_every_column_whole() -> None:
    lines = shown(None, wide=True)
    header = next(line for line in lines if line.split()[:1] == ["replica"])
    assert header.split() == " ".join(render.COLUMNS).split()
    assert any(line.rstrip().endswith(ERROR) for line in lines)
    assert not any("…" in line for line in lines)


def test_names_keep_their_spaces_quoted() -> None:
    assert render.names(["S1", "  Server 2", "a, b"]) == "S1, '  Server 2', 'a, b'"
    assert any(line.startswith("   Server 2 ") for line in shown(200))  # an edge space, then both of its own


def test_one_line_keeps_spaces_and_joins_lines() -> None:
    assert one_line("invalid replica name '  Server 1':\n  use 1-64 printable\r\ncharacters ") == (
        "invalid replica name '  Server 1': use 1-64 printable characters"
    )
