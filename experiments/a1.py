"""A-1: requests per replica at N=3 for 10,000 requests with distinct keys, once per hash strategy.

Writes a1_counts.csv (requests per replica), a1_summary.csv (max/mean, CV, failures, agreement with the
in-process ring), a1_keys.csv (every request) and a1_requests_per_replica.png into --out.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from experiments.common import (
    COLORS,
    Observation,
    Session,
    add_common_args,
    console,
    save_figure,
    sessions,
    title_params,
    uniform_keys,
    write_csv,
)

REPLICAS = 3


@dataclass(frozen=True)
class Row:
    """One strategy's line of the A-1 table."""

    strategy: str
    n: int
    requests: int
    ok: int
    failed: int
    max_mean: float
    min_mean: float
    cv: float
    agree: float | None
    seconds: float
    counts: dict[str, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def measure(session: Session, replicas: int = REPLICAS) -> Observation:
    """Bring the LB to `replicas` members and send one pass of distinct keys (reused if already taken)."""
    session.resize(replicas)
    return session.observe()


def row_of(obs: Observation) -> Row:
    spread = obs.spread()
    result = obs.result
    return Row(
        obs.strategy,
        obs.n,
        len(result.outcomes),
        result.ok,
        result.failed,
        spread.max_mean,
        spread.min_mean,
        spread.cv,
        obs.agree,
        result.seconds,
        spread.counts,
    )


def write(observations: Sequence[Observation], out: Path, params: str) -> list[Row]:
    """CSV files and the bar chart for the given N=3 observations; returns the table rows."""
    rows = [row_of(obs) for obs in observations]
    write_csv(
        out / "a1_counts.csv",
        ["strategy", "replica", "requests"],
        [(r.strategy, name, count) for r in rows for name, count in r.counts.items()],
    )
    write_csv(
        out / "a1_summary.csv",
        [
            "strategy",
            "N",
            "requests",
            "ok",
            "failed",
            "max_mean",
            "min_mean",
            "cv",
            "agree_ring",
            "seconds",
            "req_per_s",
        ],
        [
            (
                r.strategy,
                r.n,
                r.requests,
                r.ok,
                r.failed,
                r.max_mean,
                r.min_mean,
                r.cv,
                "" if r.agree is None else r.agree,
                r.seconds,
                r.rate,
            )
            for r in rows
        ],
    )
    write_csv(
        out / "a1_keys.csv",
        ["strategy", "key", "replica", "status", "error"],
        [
            (obs.strategy, o.key, o.replica or "", o.status, o.error or "")
            for obs in observations
            for o in obs.result.outcomes
        ],
    )
    plot(rows, out / "a1_requests_per_replica.png", params)
    return rows


def plot(rows: Sequence[Row], path: Path, params: str) -> Path:
    """One bar chart per strategy: requests per replica, the mean, max/mean and CV."""
    cols = min(3, len(rows))
    lines = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * lines + 0.6))
    axes = fig.subplots(lines, cols, squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        names = list(row.counts)
        values = [row.counts[n] for n in names]
        mean = row.ok / row.n if row.n else 0
        bars = ax.bar(range(len(names)), values, color=COLORS.get(row.strategy, "#1f77b4"))
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8)
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:,.0f}")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_ylim(0, max(values, default=1) * 1.3)
        ax.set_title(f"{row.strategy}: max/mean {row.max_mean:.3f}, CV {row.cv:.3f}", fontsize=10)
        ax.set_xlabel("replica")
        ax.set_ylabel("requests served")
        ax.legend(loc="upper right", fontsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle(f"A-1: requests per replica, N={rows[0].n if rows else REPLICAS} ({params})")
    fig.tight_layout()
    return save_figure(fig, path)


def print_table(rows: Sequence[Row]) -> None:
    console.print("strategy     N  requests  failed  max/mean  CV     ring agreement")
    for r in rows:
        agree = "n/a" if r.agree is None else f"{r.agree:.2%}"
        console.print(
            f"{r.strategy:<11} {r.n:>2} {r.requests:>9,} {r.failed:>7} {r.max_mean:>9.3f} {r.cv:.3f}  {agree}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.a1", description=__doc__)
    add_common_args(parser, "a1")
    parser.add_argument("--replicas", type=int, default=REPLICAS, help="N for the measurement")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run A-1 for every strategy (one LB each) or for the LB at --url."""
    args = build_parser().parse_args(argv)
    keys = uniform_keys(args.requests, args.seed)
    observations = [measure(session, args.replicas) for session in sessions(args, args.replicas, keys)]
    rows = write(observations, args.out, title_params(args))
    print_table(rows)
    console.print(f"A-1 results in {args.out}")
    return 0 if all(r.failed == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
