"""Smoke tests of experiments A-1..A-5 and run_all: each main() in a quick mode against real LBs.

They check the outputs, not the findings: the files exist, counts add up to the requests sent, and no
request failed. The full-size run is `make experiments`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from experiments import a1, a2, a3, a4, run_all
from experiments.common import DEFAULT_STRATEGY

pytestmark = pytest.mark.slow

REQUESTS = 300


def rows(path: Path) -> list[dict[str, str]]:
    assert path.is_file(), f"missing {path}"
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_pngs(folder: Path, *names: str) -> None:
    for name in names:
        png = folder / name
        assert png.is_file() and png.stat().st_size > 10_000, f"missing or empty figure {png}"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a1_counts_add_up_per_strategy(tmp_path: Path) -> None:
    argv = ["--requests", str(REQUESTS), "--strategies", "rendezvous", "builtin", "--out", str(tmp_path)]
    assert a1.main(argv) == 0

    per_strategy: dict[str, int] = defaultdict(int)
    for row in rows(tmp_path / "a1_counts.csv"):
        per_strategy[row["strategy"]] += int(row["requests"])
    assert per_strategy == {"rendezvous": REQUESTS, "builtin": REQUESTS}
    summary = {row["strategy"]: row for row in rows(tmp_path / "a1_summary.csv")}
    for row in summary.values():
        assert (row["N"], row["requests"], row["ok"], row["failed"]) == ("3", "300", "300", "0")
    assert float(summary["rendezvous"]["agree_ring"]) == 1.0  # HTTP routing == the in-process ring
    assert len(rows(tmp_path / "a1_keys.csv")) == 2 * REQUESTS
    assert_pngs(tmp_path, "a1_requests_per_replica.png")


def test_a2_sweep_counts_and_moves(tmp_path: Path) -> None:
    argv = [
        "--requests", str(REQUESTS), "--strategies", DEFAULT_STRATEGY, "--min-n", "2", "--max-n", "3",
        "--default-max-n", "4", "--out", str(tmp_path),
    ]  # fmt: skip
    assert a2.main(argv) == 0

    summary = rows(tmp_path / "a2_summary.csv")
    # up 2, 3, 4, then down 3, 2: five passes, every one complete
    assert [(r["phase"], r["N"]) for r in summary] == [("up", "2"), ("up", "3"), ("up", "4"), ("down", "3"),
                                                       ("down", "2")]  # fmt: skip
    assert all(r["requests"] == str(REQUESTS) and r["failed"] == "0" for r in summary)
    per_step: dict[str, int] = defaultdict(int)
    for row in rows(tmp_path / "a2_loads.csv"):
        per_step[row["step"]] += int(row["requests"])
    assert set(per_step.values()) == {REQUESTS}
    moves = rows(tmp_path / "a2_moves.csv")
    assert [(m["kind"], m["N_before"], m["N_after"]) for m in moves] == [
        ("add", "2", "3"), ("add", "3", "4"), ("remove", "4", "3"), ("remove", "3", "2"),
    ]  # fmt: skip
    assert all(m["cross"] == "0" and int(m["keys"]) == REQUESTS for m in moves)
    assert_pngs(tmp_path, "a2_load_per_replica.png", "a2_balance_and_moves.png")


def test_a3_short_failover(tmp_path: Path) -> None:
    argv = ["--rate", "300", "--duration", "2.5", "--kill-at", "0.8", "--out", str(tmp_path)]
    assert a3.main(argv) == 0

    requests = rows(tmp_path / "a3_requests.csv")
    assert len(requests) == 750
    assert all(r["status"] == "200" for r in requests)
    (summary,) = rows(tmp_path / "a3_summary.csv")
    assert summary["client_errors"] == "0" and summary["ok"] == "750"
    assert summary["restarts"] == "1"
    events = {r["event"]: r["after_kill_ms"] for r in rows(tmp_path / "a3_events.csv")}
    assert events["kill (SIGKILL)"] == "0"
    assert events["down in LB log"] and events["replacement serves a request"]
    assert_pngs(tmp_path, "a3_timeline.png")


def test_a4_compares_and_shows_builtin_moves_across_restarts(tmp_path: Path) -> None:
    argv = ["--requests", str(REQUESTS), "--strategies", "builtin", DEFAULT_STRATEGY, "--out", str(tmp_path)]
    assert a4.main(argv) == 0

    table = {row["strategy"]: row for row in rows(tmp_path / "a4_comparison.csv")}
    assert set(table) == {"builtin", DEFAULT_STRATEGY}
    assert all(row["failed"] == "0" and row["affinity_breaks"] == "0" for row in table.values())
    restart = {row["strategy"]: row for row in rows(tmp_path / "a4_restart.csv")}
    assert restart[DEFAULT_STRATEGY]["changed"] == "0"
    assert int(restart["builtin"]["changed"]) > 0
    # each builtin LB routes exactly as hash() does in a process with the same PYTHONHASHSEED
    assert float(restart["builtin"]["agree_a"]) == float(restart["builtin"]["agree_b"]) == 1.0
    zipf: dict[str, int] = defaultdict(int)
    for row in rows(tmp_path / "a4_zipf_counts.csv"):
        zipf[row["strategy"]] += int(row["requests"])
    assert set(zipf.values()) == {REQUESTS}
    slots = rows(tmp_path / "a4_assignment_slots.csv")
    assert sum(1 for r in slots if r["kind"] == "reachable") == 87
    assert [int(r["slot"]) for r in slots if r["kind"] == "vserver"][::26] == [26, 114]
    assert_pngs(tmp_path, "a4_comparison.png", "a4_assignment_slots.png")


def test_run_all_writes_the_report(tmp_path: Path) -> None:
    report, figures = tmp_path / "REPORT.md", tmp_path / "figures"
    argv = [
        "--requests", "200", "--strategies", DEFAULT_STRATEGY, "--min-n", "2", "--max-n", "3",
        "--default-max-n", "3", "--rate", "300", "--duration", "2", "--kill-at", "0.7",
        "--restart-check", DEFAULT_STRATEGY, "--out", str(tmp_path / "results"), "--figures", str(figures),
        "--report", str(report),
    ]  # fmt: skip
    assert run_all.main(argv) == 0

    text = report.read_text()
    for heading in ("## Targets", "## A-1", "## A-2", "## A-3", "## A-4", "### The default"):
        assert heading in text
    assert "**FAIL**" not in text.split("## A-1")[0] or "Not every check passes" in text
    for png in figures.glob("*.png"):
        assert f"(figures/{png.name})" in text
    for block in text.split("\n\n"):  # every markdown table has as many cells per row as in its header
        table = [line for line in block.splitlines() if line.startswith("|")]
        if table:
            assert len({line.count(" | ") for line in table if not line.startswith("|--")}) == 1, block
    assert_pngs(figures, *(Path(rel).name for rel in run_all.REPORT_FIGURES.values()))
