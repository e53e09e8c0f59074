"""A-2: load per replica as N grows (POST /add) and shrinks (DELETE /rm), and the share of keys that move.

For each strategy: N = --min-n .. --max-n by adding one generated replica at a time, then --down-steps
removals of a randomly chosen replica that is not the newest; the default strategy goes up to
--default-max-n and all the way back down to --min-n. Every step re-requests the same distinct keys over
HTTP, so "moved" is the share of keys whose answering replica changed (ideal 1/(N+1) for the larger N),
and "cross" counts keys that moved between two replicas that were neither added nor removed.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from experiments.common import (
    COLORS,
    DEFAULT_STRATEGY,
    Movement,
    Observation,
    Session,
    add_common_args,
    console,
    natural_sorted,
    ratio_axis,
    save_figure,
    sessions,
    title_params,
    uniform_keys,
    write_csv,
)

MIN_N, MAX_N, DEFAULT_MAX_N = 2, 6, 10


@dataclass(frozen=True)
class Sweep:
    """One strategy's observations (in order) and the single-replica steps between them."""

    strategy: str
    observations: list[Observation]
    movements: list[Movement]

    def phase(self, index: int) -> str:
        """'up' until (and at) the first observation at the largest N, 'down' after it."""
        if not self.observations:
            return "up"
        top = max(o.n for o in self.observations)
        peak = next(i for i, o in enumerate(self.observations) if o.n == top)
        return "up" if index <= peak else "down"

    def at(self, n: int, phase: str = "up") -> Observation | None:
        for i, obs in enumerate(self.observations):
            if obs.n == n and self.phase(i) == phase:
                return obs
        return None


def grow(session: Session, to: int) -> None:
    """Observe the current membership, then add one replica at a time up to `to`, observing each."""
    session.observe()
    while len(session.members()) < to:
        session.add()
        session.observe()


def shrink(session: Session, to: int, steps: int, seed: int) -> None:
    """Remove up to `steps` replicas (never below `to`), each a seeded random choice among all but the
    newest, observing after each removal. The same seed picks the same names for every strategy."""
    rng = random.Random(f"a2-remove-{seed}")
    session.observe()
    for _ in range(steps):
        members = natural_sorted(session.members())
        if len(members) <= to:
            return
        session.remove(rng.choice(members[:-1]))
        session.observe()


def sweep(session: Session, min_n: int, max_n: int, down_steps: int, seed: int) -> Sweep:
    """A-2 on one LB: down to min_n (removing the newest), up to max_n, then `down_steps` removals."""
    if len(session.members()) > min_n:
        session.resize(min_n)
    grow(session, max_n)
    shrink(session, min_n, down_steps, seed)
    return collect(session)


def collect(session: Session) -> Sweep:
    return Sweep(session.strategy, session.uniform(), session.movements())


def default_plan(strategy: str, args: argparse.Namespace) -> tuple[int, int]:
    """(max N, removal steps) for a strategy: the default strategy goes further and all the way back."""
    if strategy == DEFAULT_STRATEGY:
        top = max(args.max_n, args.default_max_n)
        return top, top - args.min_n
    return args.max_n, args.down_steps


def write(sweeps: Sequence[Sweep], out: Path, params: str) -> None:
    """CSV files and figures for the sweeps."""
    loads, summary = [], []
    for sw in sweeps:
        for i, obs in enumerate(sw.observations):
            spread = obs.spread()
            phase = sw.phase(i)
            members = " | ".join(obs.members)
            loads += [(sw.strategy, i, phase, obs.n, name, c) for name, c in spread.counts.items()]
            summary.append(
                (
                    sw.strategy,
                    i,
                    phase,
                    obs.n,
                    members,
                    len(obs.result.outcomes),
                    obs.result.failed,
                    spread.min,
                    spread.max,
                    spread.mean,
                    spread.max_mean,
                    spread.min_mean,
                    spread.cv,
                    "" if obs.agree is None else obs.agree,
                    obs.result.seconds,
                )
            )
    write_csv(out / "a2_loads.csv", ["strategy", "step", "phase", "N", "replica", "requests"], loads)
    write_csv(
        out / "a2_summary.csv",
        [
            "strategy",
            "step",
            "phase",
            "N",
            "members",
            "requests",
            "failed",
            "min",
            "max",
            "mean",
            "max_mean",
            "min_mean",
            "cv",
            "agree_ring",
            "seconds",
        ],
        summary,
    )
    write_csv(
        out / "a2_moves.csv",
        [
            "strategy",
            "kind",
            "replica",
            "N_before",
            "N_after",
            "keys",
            "moved",
            "share",
            "ideal",
            "ratio",
            "cross",
        ],
        [
            (
                sw.strategy,
                m.kind,
                m.replica,
                m.n_before,
                m.n_after,
                m.keys,
                m.moved,
                m.share,
                m.ideal,
                m.ratio,
                m.cross,
            )
            for sw in sweeps
            for m in sw.movements
        ],
    )
    plot_loads(sweeps, out / "a2_load_per_replica.png", params)
    plot_balance(sweeps, out / "a2_balance_and_moves.png", params)


def plot_loads(sweeps: Sequence[Sweep], path: Path, params: str) -> Path:
    """Per strategy: mean requests per replica against N with the min-max band (growing phase), and the
    shrinking phase's min/max as markers."""
    cols = min(3, len(sweeps))
    lines = -(-len(sweeps) // cols)
    fig = Figure(figsize=(4.8 * cols, 3.6 * lines + 0.6))
    axes = fig.subplots(lines, cols, squeeze=False)
    for ax, sw in zip(axes.flat, sweeps, strict=False):
        color = COLORS.get(sw.strategy, "#1f77b4")
        up = [(o.n, o.spread()) for i, o in enumerate(sw.observations) if sw.phase(i) == "up"]
        up.sort(key=lambda item: item[0])
        ns = [n for n, _ in up]
        ax.fill_between(
            ns,
            [s.min for _, s in up],
            [s.max for _, s in up],
            color=color,
            alpha=0.25,
            label="min-max (adding)",
        )
        ax.plot(ns, [s.mean for _, s in up], color=color, marker="o", label="mean")
        down = [(o.n, o.spread()) for i, o in enumerate(sw.observations) if sw.phase(i) == "down"]
        if down:
            ax.scatter(
                [n for n, _ in down],
                [s.max for _, s in down],
                marker="v",
                color="black",
                s=18,
                label="max/min after /rm",
            )
            ax.scatter([n for n, _ in down], [s.min for _, s in down], marker="^", color="black", s=18)
        worst = max(up, key=lambda item: item[1].max_mean)
        ax.set_title(f"{sw.strategy}: worst max/mean {worst[1].max_mean:.2f} (N={worst[0]})", fontsize=10)
        ax.set_xlabel("replicas N")
        ax.set_ylabel("requests per replica")
        ax.set_xticks(sorted({o.n for o in sw.observations}))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(sweeps) :]:
        ax.set_visible(False)
    fig.suptitle(f"A-2: requests per replica as N changes ({params})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_balance(sweeps: Sequence[Sweep], path: Path, params: str) -> Path:
    """Max/mean against N per strategy (all, log scale; and the even ones, zoomed, with the targets), and the
    share of keys moved per step against the ideal 1/(N+1)."""
    fig = Figure(figsize=(19, 5.2))
    left, middle, right = fig.subplots(1, 3)
    zoom_top, zoomed = 1.16, False
    for sw in sweeps:
        color = COLORS.get(sw.strategy, "#1f77b4")
        up = sorted((o.n, o.spread().max_mean) for i, o in enumerate(sw.observations) if sw.phase(i) == "up")
        left.plot([n for n, _ in up], [v for _, v in up], marker="o", color=color, label=sw.strategy)
        if max(v for _, v in up) <= zoom_top:
            zoomed = True
            middle.plot([n for n, _ in up], [v for _, v in up], marker="o", color=color, label=sw.strategy)
        adds = sorted((m.n_after, m.share) for m in sw.movements if m.kind == "add")
        removes = sorted((m.n_before, m.share) for m in sw.movements if m.kind == "remove")
        right.plot(
            [n for n, _ in adds], [v for _, v in adds], marker="o", color=color, label=f"{sw.strategy} add"
        )
        if removes:
            right.scatter(
                [n for n, _ in removes],
                [v for _, v in removes],
                marker="x",
                color=color,
                s=40,
                label=f"{sw.strategy} remove",
            )
    left.axhline(1.0, color="black", linewidth=0.8)
    ratio_axis(left, [o.spread().max_mean for sw in sweeps for o in sw.observations])
    left.set_xlabel("replicas N")
    left.set_ylabel("busiest replica / mean (log scale)")
    left.set_title("max/mean load while growing, all strategies")
    left.legend(fontsize=8)
    for target, label in ((1.05, "target N=3: 1.05"), (1.10, "target N=10: 1.10")):
        middle.axhline(target, color="black", linestyle=":", linewidth=1)
        middle.text(middle.get_xlim()[0], target, f" {label}", fontsize=8, va="bottom")
    middle.axhline(1.0, color="black", linewidth=0.8)
    middle.set_ylim(0.99, zoom_top)
    middle.set_xlabel("replicas N")
    middle.set_ylabel("busiest replica / mean")
    middle.set_title(f"zoom: strategies that stay under {zoom_top}")
    if zoomed:
        middle.legend(fontsize=8, loc="upper left")
    else:
        middle.text(0.5, 0.5, f"no strategy stayed under {zoom_top}", ha="center", transform=middle.transAxes)
    all_n = sorted({max(m.n_before, m.n_after) for sw in sweeps for m in sw.movements})
    if all_n:
        right.plot(
            all_n, [1 / n for n in all_n], color="black", linestyle="--", linewidth=1.5, label="ideal 1/(N+1)"
        )
    right.set_xlabel("larger N of the step (add: N after; remove: N before)")
    right.set_ylabel("share of keys that changed replica")
    right.set_title("keys moved by one /add (o) or /rm (x)")
    right.legend(fontsize=7, ncol=2)
    for ax in (left, middle, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(f"A-2: balance and movement ({params})")
    fig.tight_layout()
    return save_figure(fig, path)


def print_sweep(sw: Sweep) -> None:
    for i, obs in enumerate(sw.observations):
        s = obs.spread()
        console.print(
            f"{sw.strategy:<10} {sw.phase(i):<4} N={obs.n:<2} max/mean {s.max_mean:.3f} cv {s.cv:.3f} "
            f"failed {obs.result.failed}"
        )
    for m in sw.movements:
        console.print(
            f"{sw.strategy:<10} {m.kind:<6} {m.replica:<10} {m.n_before}->{m.n_after}: moved {m.share:.2%} "
            f"(ideal {m.ideal:.2%}, x{m.ratio:.2f}), cross {m.cross}"
        )


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--min-n", type=int, default=MIN_N)
    parser.add_argument("--max-n", type=int, default=MAX_N)
    parser.add_argument(
        "--default-max-n",
        type=int,
        default=DEFAULT_MAX_N,
        help=f"the default strategy ({DEFAULT_STRATEGY}) grows to this N and shrinks back to --min-n",
    )
    parser.add_argument("--down-steps", type=int, default=1, help="removals for the other strategies")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.a2", description=__doc__)
    add_common_args(parser, "a2")
    add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run A-2 for every strategy (one LB each) or for the LB at --url."""
    args = build_parser().parse_args(argv)
    keys = uniform_keys(args.requests, args.seed)
    sweeps = []
    for session in sessions(args, args.min_n, keys):
        top, down = default_plan(session.strategy, args)
        sw = sweep(session, args.min_n, top, down, args.seed)
        print_sweep(sw)
        sweeps.append(sw)
    write(sweeps, args.out, title_params(args))
    console.print(f"A-2 results in {args.out}")
    failed = sum(o.result.failed for sw in sweeps for o in sw.observations)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
