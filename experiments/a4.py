"""A-4: the six hash strategies side by side, and why the course's functions skew.

Over HTTP, per strategy (one LB each, N=3): distinct keys (as A-1), Zipf-distributed keys (hot keys),
one /add (3->4) and one /rm (4->3, a replica that is not the newest). The builtin strategy (hash()) is
also run on a second LB with another PYTHONHASHSEED, as is the default strategy as a control, to show
which keys change replica across a restart. In-process (make_strategy): lookup cost in µs per key, and
where the course's H and Phi put requests and virtual servers on the 512 slots.
Writes a4_*.csv and a4_comparison.png, a4_assignment_slots.png into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import timeit
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from app.ring import make_strategy
from app.ring.slot_strategies import assignment_key_slot, assignment_vserver_slot
from app.ring.slots import SLOTS, VSERVERS, SlotRing
from experiments import a1, a2
from experiments.common import (
    COLORS,
    DEFAULT_STRATEGY,
    Movement,
    Observation,
    PassOptions,
    Session,
    Spread,
    add_common_args,
    console,
    save_figure,
    sessions,
    spread_of,
    title_params,
    uniform_keys,
    write_csv,
    zipf_keys,
)
from experiments.launch import ROOT, LocalLB, launch_lb

ZIPF_EXPONENT, ZIPF_UNIVERSE = 1.1, 10_000
SEED_A, SEED_B = "1", "2"


# ----- over HTTP --------------------------------------------------------------------------------
def zipf(session: Session, keys: Sequence[str], replicas: int = 3) -> Observation:
    """One pass of Zipf-distributed keys at `replicas` members."""
    session.resize(replicas)
    return session.observe("zipf", keys)


def affinity_breaks(obs: Observation) -> int:
    """Keys that were answered by more than one replica within one pass (should be 0)."""
    seen: dict[str, set[str]] = {}
    for o in obs.result.outcomes:
        if o.replica is not None:
            seen.setdefault(o.key, set()).add(o.replica)
    return sum(1 for replicas in seen.values() if len(replicas) > 1)


@dataclass(frozen=True)
class Restart:
    """The same keys on two LBs of one strategy that differ only in PYTHONHASHSEED."""

    strategy: str
    members: tuple[str, ...]
    seeds: tuple[str, str]
    keys: int
    changed: int
    agree_a: float | None  # LB with seed A vs in-process prediction with seed A
    agree_b: float | None

    @property
    def share(self) -> float:
        return self.changed / self.keys if self.keys else 0.0


def predict_with_hashseed(
    strategy: str, hashseed: str, members: Sequence[str], keys: Sequence[str]
) -> dict[str, str]:
    """key -> replica from make_strategy in a fresh interpreter with PYTHONHASHSEED=hashseed."""
    code = (
        "import json, sys\n"
        "from app.ring import make_strategy\n"
        "job = json.load(sys.stdin)\n"
        "ring = make_strategy(job['strategy']).build(job['members'])\n"
        "json.dump({k: ring.lookup(k) for k in job['keys']}, sys.stdout)\n"
    )
    job = json.dumps({"strategy": strategy, "members": list(members), "keys": list(keys)})
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=job,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result


def agreement(observed: Mapping[str, str], expected: Mapping[str, str]) -> float:
    keys = observed.keys() & expected.keys()
    return sum(observed[k] == expected[k] for k in keys) / len(keys) if keys else 0.0


def restart_check(
    strategy: str,
    base: Observation | None,
    keys: list[str],
    opts: PassOptions,
    workdir: Path,
    replicas: int = 3,
    launched: LocalLB | None = None,
) -> Restart:
    """Compare `base` (an LB with PYTHONHASHSEED=SEED_A at `replicas`) with a new LB with SEED_B.

    Without `base`, the SEED_A LB is started here too. `launched` is an LB with SEED_B already starting.
    """
    observations = [] if base is None else [base]
    for seed in (SEED_A, SEED_B)[len(observations) :]:
        if launched is not None and seed == SEED_B:
            lb = launched
        else:
            lb = launch_lb(strategy, replicas, workdir, hashseed=seed)
        try:
            lb.wait_ready()
            observations.append(a1.measure(Session.attach(lb.url, keys, opts, lb), replicas))
        finally:
            lb.stop()
    first, second = observations
    before, after = first.result.mapping(), second.result.mapping()
    common = before.keys() & after.keys()
    changed = sum(before[k] != after[k] for k in common)
    agree: list[float | None] = [first.agree, second.agree]
    if strategy == "builtin":
        # The in-process ring of this process uses another hash seed: predict in one with the LB's seed.
        for i, (obs, seed) in enumerate(zip(observations, (SEED_A, SEED_B), strict=True)):
            mapping = obs.result.mapping()
            agree[i] = agreement(mapping, predict_with_hashseed(strategy, seed, obs.members, list(mapping)))
    return Restart(strategy, first.members, (SEED_A, SEED_B), len(common), changed, agree[0], agree[1])


def inprocess_spread(strategy: str, n: int, keys: Sequence[str]) -> Spread:
    """Keys per replica by the in-process ring at N replicas named like the LB's ('Server 1'..).

    For builtin the ring is computed in a process with PYTHONHASHSEED=SEED_A, like the LBs.
    """
    members = [f"Server {i}" for i in range(1, n + 1)]
    if strategy == "builtin":  # hash() depends on the seed: use the LBs' seed, in a process that has it
        return spread_of(predict_with_hashseed(strategy, SEED_A, members, keys).values(), members)
    ring = make_strategy(strategy).build(members)
    return spread_of((ring.lookup(k) for k in keys), members)


# ----- in-process --------------------------------------------------------------------------------
def lookup_us(strategy: str, n: int, keys: Sequence[str], repeat: int = 5) -> float:
    """Best-of-`repeat` µs per ring.lookup over `keys` (includes hashing the key), one run in-process."""
    ring = make_strategy(strategy).build([f"Server {i}" for i in range(1, n + 1)])
    lookup = ring.lookup

    def run() -> None:
        for key in keys:
            lookup(key)

    return min(timeit.repeat(run, number=1, repeat=repeat)) / len(keys) * 1e6


@dataclass(frozen=True)
class SlotAnalysis:
    """Where the course's H and Phi put requests and virtual servers at N replicas."""

    members: tuple[str, ...]
    reachable: list[int]  # slots H reaches over every 6-digit id
    vservers: list[tuple[int, str]]  # (slot after probing, replica), sorted
    raw_phi: list[tuple[int, str, int]]  # (Phi before probing, replica, j)
    key_slots: Counter[int]  # the measured keys per slot
    owner_share: dict[str, float]  # share of the measured keys each replica owns
    wrapped: int  # keys whose slot is past the last virtual server or at/before the first

    @property
    def span(self) -> tuple[int, int]:
        return self.vservers[0][0], self.vservers[-1][0]


def slot_analysis(keys: Sequence[str], n: int = 3) -> SlotAnalysis:
    """Evaluate H over all 6-digit ids and read the virtual-server placement from app's SlotRing."""
    members = tuple(f"Server {i}" for i in range(1, n + 1))
    ring = make_strategy("assignment").build(list(members))
    assert isinstance(ring, SlotRing)
    # The placement after quadratic probing lives in the ring (read, not recomputed).
    vservers = list(zip(ring._points, ring._names, strict=True))
    raw = sorted((assignment_vserver_slot(name, j), name, j) for name in members for j in range(VSERVERS))
    reachable = sorted({assignment_key_slot(str(i)) for i in range(100_000, 1_000_000)})
    slots = Counter(assignment_key_slot(k) for k in keys)
    owners = Counter(ring.lookup(k) for k in keys)
    first, last = vservers[0][0], vservers[-1][0]
    wrapped = sum(c for s, c in slots.items() if s > last or s <= first)
    share = {m: owners.get(m, 0) / len(keys) for m in members}
    return SlotAnalysis(members, reachable, vservers, raw, slots, share, wrapped)


def plot_slots(sa: SlotAnalysis, path: Path, params: str) -> Path:
    """Requests per slot (coloured by the replica that owns the slot) and the virtual servers."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    color = {m: palette[i % len(palette)] for i, m in enumerate(sa.members)}
    owner_of_slot = {}
    for slot in range(SLOTS):
        # A key in slot s goes to the first virtual server at a slot >= s (wrapping): the ring's own rule.
        owner_of_slot[slot] = next((name for p, name in sa.vservers if p >= slot), sa.vservers[0][1])
    fig = Figure(figsize=(13, 6.5))
    top, bottom = fig.subplots(2, 1, height_ratios=[2.2, 1])
    xs = sorted(sa.key_slots)
    top.bar(xs, [sa.key_slots[s] for s in xs], width=3, color=[color[owner_of_slot[s]] for s in xs])
    lo, hi = sa.span
    top.axvspan(lo, hi, color="grey", alpha=0.15)
    top.text(
        hi + 4,
        max(sa.key_slots.values()) * 0.92,
        f"all {len(sa.vservers)} virtual servers: slots {lo}-{hi}",
        fontsize=9,
    )
    handles = [
        Patch(color=color[m], label=f"requests owned by {m} ({sa.owner_share[m]:.1%})") for m in sa.members
    ]
    top.set_xlim(-5, SLOTS + 5)
    top.set_xlabel(f"slot H(i) = i² + 2i + 17 mod {SLOTS} ({len(sa.reachable)} of {SLOTS} slots reachable)")
    top.set_ylabel("requests in the slot")
    top.legend(handles=handles, fontsize=9, loc="upper right")
    top.set_title(f"A-4: the course's H and Φ at N={len(sa.members)} ({params})")
    for slot, name in sa.vservers:
        bottom.vlines(slot, 0, 1, color=color[name], linewidth=2)
    for m in sa.members:
        bottom.plot([], [], color=color[m], linewidth=2, label=m)
    bottom.annotate(
        "",
        xy=(SLOTS, 0.5),
        xytext=(hi + 2, 0.5),
        arrowprops={"arrowstyle": "->", "color": color[sa.vservers[0][1]]},
    )
    bottom.text(
        (hi + SLOTS) / 2,
        0.56,
        f"keys in slots {hi + 1}..{SLOTS - 1} (and 0..{lo}) wrap around to the virtual server at slot {lo}: "
        f"{sa.vservers[0][1]}",
        ha="center",
        fontsize=9,
    )
    bottom.set_xlim(-5, SLOTS + 5)
    bottom.set_ylim(0, 1)
    bottom.set_yticks([])
    bottom.set_xlabel(
        "slot of each virtual server Φ(i, j) = i² + j² + 2j + 25 mod 512, after quadratic probing"
    )
    bottom.legend(fontsize=8, loc="upper right", ncol=len(sa.members))
    fig.tight_layout()
    return save_figure(fig, path)


# ----- the comparison --------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One strategy's column of numbers."""

    strategy: str
    max_mean3: float
    cv3: float
    max_mean_top: tuple[int, float] | None  # (N, max/mean) at the largest common N of the sweep
    add: Movement | None
    remove: Movement | None
    cross: int  # keys moved between uninvolved replicas, over every step measured
    zipf_max_mean: float
    zipf_cv: float
    hot_share: float  # requests on the hottest key
    hot_replica: str
    affinity_breaks: int
    lookup3: float
    lookup10: float
    inproc_max_mean10: float  # the in-process ring at N=10 over the same keys
    restart: Restart | None
    failed: int
    agree: float | None  # worst agreement with the in-process ring over every pass


def pick_add(moves: Sequence[Movement], n_before: int = 3) -> Movement | None:
    return next((m for m in moves if m.kind == "add" and m.n_before == n_before), None)


def pick_remove(moves: Sequence[Movement], n_before: int = 6) -> Movement | None:
    removes = [m for m in moves if m.kind == "remove"]
    return next((m for m in removes if m.n_before == n_before), removes[0] if removes else None)


def compare(
    session: Session,
    zipf_obs: Observation,
    lookups: Mapping[tuple[str, int], float],
    restart: Restart | None,
    top_n: int | None = None,
) -> Comparison:
    """Collect one strategy's numbers from its session."""
    uniform = session.uniform()
    at3 = next(o for o in uniform if o.n == 3)
    moves = session.movements()
    top = None
    if top_n is not None:
        found = next((o for o in uniform if o.n == top_n), None)
        top = (top_n, found.spread().max_mean) if found else None
    zs = zipf_obs.spread()
    hottest, hot_count = Counter(o.key for o in zipf_obs.result.outcomes).most_common(1)[0]
    agrees = [o.agree for o in session.observations if o.agree is not None]
    return Comparison(
        strategy=session.strategy,
        max_mean3=at3.spread().max_mean,
        cv3=at3.spread().cv,
        max_mean_top=top,
        add=pick_add(moves),
        remove=pick_remove(moves, top_n or 4),
        cross=sum(m.cross for m in moves),
        zipf_max_mean=zs.max_mean,
        zipf_cv=zs.cv,
        hot_share=hot_count / len(zipf_obs.result.outcomes),
        hot_replica=zipf_obs.result.mapping().get(hottest, "?"),
        affinity_breaks=affinity_breaks(zipf_obs),
        lookup3=lookups[(session.strategy, 3)],
        lookup10=lookups[(session.strategy, 10)],
        inproc_max_mean10=inprocess_spread(session.strategy, 10, session.keys).max_mean,
        restart=restart,
        failed=sum(o.result.failed for o in session.observations),
        agree=min(agrees) if agrees else None,
    )


def write(
    rows: Sequence[Comparison], sa: SlotAnalysis, zipf_obs: Sequence[Observation], out: Path, params: str
) -> None:
    """CSV files and figures for A-4."""
    write_csv(
        out / "a4_comparison.csv",
        [
            "strategy",
            "max_mean_N3",
            "cv_N3",
            "N_top",
            "max_mean_N_top",
            "add_step",
            "add_moved",
            "add_ideal",
            "add_ratio",
            "rm_step",
            "rm_moved",
            "rm_ideal",
            "rm_ratio",
            "cross_moved",
            "zipf_max_mean",
            "zipf_cv",
            "hot_key_share",
            "hot_key_replica",
            "affinity_breaks",
            "lookup_us_N3",
            "lookup_us_N10",
            "inproc_max_mean_N10",
            "restart_changed",
            "failed",
            "ring_agreement_min",
        ],
        [
            (
                r.strategy,
                r.max_mean3,
                r.cv3,
                r.max_mean_top[0] if r.max_mean_top else "",
                r.max_mean_top[1] if r.max_mean_top else "",
                step(r.add),
                r.add.share if r.add else "",
                r.add.ideal if r.add else "",
                r.add.ratio if r.add else "",
                step(r.remove),
                r.remove.share if r.remove else "",
                r.remove.ideal if r.remove else "",
                r.remove.ratio if r.remove else "",
                r.cross,
                r.zipf_max_mean,
                r.zipf_cv,
                r.hot_share,
                r.hot_replica,
                r.affinity_breaks,
                r.lookup3,
                r.lookup10,
                r.inproc_max_mean10,
                "" if r.restart is None else r.restart.share,
                r.failed,
                "" if r.agree is None else r.agree,
            )
            for r in rows
        ],
    )
    restarts = [r.restart for r in rows if r.restart is not None]
    write_csv(
        out / "a4_restart.csv",
        ["strategy", "members", "hashseed_a", "hashseed_b", "keys", "changed", "share", "agree_a", "agree_b"],
        [
            (
                x.strategy,
                " | ".join(x.members),
                x.seeds[0],
                x.seeds[1],
                x.keys,
                x.changed,
                x.share,
                "" if x.agree_a is None else x.agree_a,
                "" if x.agree_b is None else x.agree_b,
            )
            for x in restarts
        ],
    )
    write_csv(
        out / "a4_zipf_counts.csv",
        ["strategy", "replica", "requests"],
        [(o.strategy, name, c) for o in zipf_obs for name, c in o.spread().counts.items()],
    )
    write_csv(
        out / "a4_assignment_slots.csv",
        ["kind", "slot", "replica", "j", "requests"],
        [("vserver", s, name, "", "") for s, name in sa.vservers]
        + [("phi_raw", s, name, j, "") for s, name, j in sa.raw_phi]
        + [("request_slot", s, "", "", c) for s, c in sorted(sa.key_slots.items())]
        + [("reachable", s, "", "", "") for s in sa.reachable],
    )
    plot_comparison(rows, out / "a4_comparison.png", params)
    plot_slots(sa, out / "a4_assignment_slots.png", params)


def step(m: Movement | None) -> str:
    return "" if m is None else f"{m.n_before}→{m.n_after}"


def plot_comparison(rows: Sequence[Comparison], path: Path, params: str) -> Path:
    """Side-by-side bars per strategy: balance, movement, hot keys, lookup cost, restart stability."""
    names = [r.strategy for r in rows]
    colors = [COLORS.get(n, "#1f77b4") for n in names]
    fig = Figure(figsize=(17, 8.6))
    axes = fig.subplots(2, 4).flat

    def bars(
        ax: Axes,
        values: Sequence[float | None],
        title: str,
        ylabel: str,
        fmt: str = "{:.3f}",
        ref: float | None = None,
    ) -> None:
        shown = [0.0 if v is None else v for v in values]
        drawn = ax.bar(range(len(names)), shown, color=colors)
        ax.bar_label(drawn, labels=["n/a" if v is None else fmt.format(v) for v in values], fontsize=7)
        if ref is not None:
            ax.axhline(ref, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_ylim(0, max(shown, default=1.0) * 1.15 or 1.0)

    bars(axes[0], [r.max_mean3 for r in rows], "max/mean, N=3, distinct keys", "busiest / mean", ref=1.0)
    bars(axes[1], [r.cv3 for r in rows], "coefficient of variation, N=3", "std / mean")
    top_n = next((r.max_mean_top[0] for r in rows if r.max_mean_top), None)
    bars(
        axes[2],
        [r.max_mean_top[1] if r.max_mean_top else None for r in rows],
        f"max/mean, N={top_n if top_n else '?'}, distinct keys",
        "busiest / mean",
        ref=1.0,
    )
    bars(
        axes[3],
        [r.add.ratio if r.add else None for r in rows],
        f"keys moved by /add {step(rows[0].add) if rows and rows[0].add else ''} ÷ ideal",
        "moved / ideal",
        fmt="{:.2f}",
        ref=1.0,
    )
    bars(
        axes[4],
        [r.remove.ratio if r.remove else None for r in rows],
        f"keys moved by /rm {step(rows[0].remove) if rows and rows[0].remove else ''} ÷ ideal",
        "moved / ideal",
        fmt="{:.2f}",
        ref=1.0,
    )
    bars(
        axes[5],
        [r.zipf_max_mean for r in rows],
        f"max/mean, N=3, Zipf({ZIPF_EXPONENT}) keys",
        "busiest / mean",
        ref=1.0,
    )
    ax = axes[6]
    width = 0.4
    for offset, values, alpha in (
        (-width / 2, [r.lookup3 for r in rows], 1.0),
        (width / 2, [r.lookup10 for r in rows], 0.55),
    ):
        drawn = ax.bar([i + offset for i in range(len(names))], values, width, color=colors, alpha=alpha)
        ax.bar_label(drawn, labels=[f"{v:.2f}" for v in values], fontsize=6)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set_title("lookup cost in-process: N=3 (solid), N=10 (light)", fontsize=10)
    ax.set_ylabel("µs per key", fontsize=9)
    ax.set_ylim(0, max(max(r.lookup3, r.lookup10) for r in rows) * 1.15)
    checked = [r.strategy for r in rows if r.restart is not None]
    bars(
        axes[7],
        [None if r.restart is None else r.restart.share for r in rows],
        f"keys on another replica after a restart\n"
        f"(PYTHONHASHSEED {SEED_A} → {SEED_B}; run: {', '.join(checked)})",
        "share of keys",
        fmt="{:.1%}",
    )
    fig.suptitle(f"A-4: strategies side by side ({params})")
    fig.tight_layout()
    return save_figure(fig, path)


def print_rows(rows: Sequence[Comparison]) -> None:
    for r in rows:
        restart = "n/a" if r.restart is None else f"{r.restart.share:.1%}"
        console.print(
            f"{r.strategy:<10} max/mean {r.max_mean3:.3f} cv {r.cv3:.3f} "
            f"add x{r.add.ratio if r.add else 0:.2f} "
            f"rm x{r.remove.ratio if r.remove else 0:.2f} cross {r.cross} zipf {r.zipf_max_mean:.3f} "
            f"lookup {r.lookup3:.2f}/{r.lookup10:.2f} µs restart {restart} failed {r.failed}"
        )


def lookup_table(strategies: Sequence[str], keys: Sequence[str]) -> dict[tuple[str, int], float]:
    return {(s, n): lookup_us(s, n, keys) for s in strategies for n in (3, 10)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.a4", description=__doc__)
    add_common_args(parser, "a4")
    add_args(parser)
    return parser


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--restart-check",
        nargs="*",
        default=["builtin", DEFAULT_STRATEGY],
        help="strategies to run again with another PYTHONHASHSEED (not with --url)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run A-4 for every strategy (one LB each; two more for the restart check) or for the LB at --url."""
    args = build_parser().parse_args(argv)
    keys = uniform_keys(args.requests, args.seed)
    hot = zipf_keys(args.requests, args.seed, ZIPF_EXPONENT, ZIPF_UNIVERSE)
    rows, zipfs = [], []
    for session in sessions(args, 3, keys):
        a1.measure(session)
        zipf_obs = zipf(session, hot)
        session.add()
        session.observe()
        a2.shrink(session, 3, 1, args.seed)
        restart = None
        if not args.url and session.strategy in args.restart_check:
            restart = restart_check(
                session.strategy, session.uniform()[0], keys, session.opts, args.out / "lb"
            )
        lookups = lookup_table([session.strategy], keys)
        rows.append(compare(session, zipf_obs, lookups, restart))
        zipfs.append(zipf_obs)
    sa = slot_analysis(keys)
    write(rows, sa, zipfs, args.out, title_params(args))
    print_rows(rows)
    console.print(f"A-4 results in {args.out}")
    return 0 if all(r.failed == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
