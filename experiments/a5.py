"""A-5: bounded loads (LB_BALANCE_FACTOR) under Zipf(1.1) keys: the busiest replica, and where cold keys go.

Two LBs of the default strategy with the same replicas, one with plain consistent hashing and one with
LB_BALANCE_FACTOR, each sent the same Zipf-distributed requests at bounded concurrency. "Home" is the replica
the ring gives a key (app.ring, in process); a "cold" replica is one whose home requests are at most the mean.
Writes a5_bounded.csv and a5_bounded.png into --out; with --report, puts its section into that report.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.a4 import ZIPF_EXPONENT, ZIPF_UNIVERSE
from experiments.common import (
    DEFAULT_STRATEGY,
    PassOptions,
    add_common_args,
    console,
    control,
    natural_sorted,
    pass_options,
    predicted,
    run_pass,
    save_figure,
    title_params,
    write_csv,
    zipf_keys,
)
from experiments.launch import running_lb
from experiments.report import blocks, image, para

FACTOR = 1.25
REPLICAS = 4
SECTION = "## A-5: bounded loads under hot keys"


@dataclass(frozen=True)
class Bounded:
    """One pass of Zipf keys through one LB."""

    factor: float | None  # None: plain consistent hashing
    home: dict[str, int]  # requests per replica the ring gives their key (no load)
    served: dict[str, int]  # requests per replica that answered
    cold_home: int  # requests whose home replica is cold
    cold_stayed: int  # ... of which that replica answered
    failed: int
    errors: tuple[str, ...] = ()  # the first few failures: status and what the client saw

    @property
    def max_over_mean(self) -> float:
        """Requests on the busiest replica / the mean."""
        return max(self.served.values()) / (sum(self.served.values()) / len(self.served))

    @property
    def home_max_over_mean(self) -> float:
        """The same for the ring's assignment alone (what plain hashing gives)."""
        return max(self.home.values()) / (sum(self.home.values()) / len(self.home))

    @property
    def cold_stay_share(self) -> float:
        """Share of the cold replicas' requests that stayed on their replica."""
        return self.cold_stayed / self.cold_home if self.cold_home else 1.0


def measure(
    url: str, members: Sequence[str], keys: Sequence[str], factor: float | None, opts: PassOptions
) -> Bounded:
    """Send `keys` through the LB at `url` and compare who answered with each key's home replica."""
    home_of = predicted(DEFAULT_STRATEGY, members, keys)
    assert home_of is not None
    label = f"A-5 factor {factor or 'off'}"
    outcomes = run_pass(url, keys, label, opts).outcomes
    home = Counter(home_of[k] for k in keys)
    served = Counter({name: 0 for name in members})
    served.update(o.replica for o in outcomes if o.replica is not None)
    mean = len(keys) / len(members)
    cold = {name for name in members if home[name] <= mean}
    cold_requests = [o for o in outcomes if home_of[o.key] in cold]
    return Bounded(
        factor=factor,
        home=dict(home),
        served=dict(served),
        cold_home=len(cold_requests),
        cold_stayed=sum(1 for o in cold_requests if o.replica == home_of[o.key]),
        failed=sum(1 for o in outcomes if o.replica is None),
        errors=tuple(f"{o.status} {o.error}" for o in outcomes if o.replica is None)[:5],
    )


def run(
    workdir: Path,
    keys: Sequence[str],
    opts: PassOptions,
    factor: float = FACTOR,
    settings: Mapping[str, str] | None = None,
) -> list[Bounded]:
    """The same keys through an LB without and one with bounded loads (REPLICAS replicas, `settings` each)."""
    results = []
    for setting in (None, factor):
        lb_settings = dict(settings or {})
        if setting is not None:
            lb_settings["balance_factor"] = str(setting)
        with running_lb(DEFAULT_STRATEGY, REPLICAS, workdir, settings=lb_settings) as lb:
            members = natural_sorted(lb_members(lb.url))
            results.append(measure(lb.url, members, keys, setting, opts))
    return results


def lb_members(url: str) -> list[str]:
    """The replicas on the LB's ring now."""
    return [m["name"] for m in control(url, "GET", "/ring")["members"]]


def write(results: Sequence[Bounded], out: Path, params: str) -> None:
    """CSV of requests per replica (home and served, per factor) and a bar chart."""
    import matplotlib.pyplot as plt

    members = natural_sorted(results[0].served)
    write_csv(
        out / "a5_bounded.csv",
        ["factor", "replica", "home_requests", "served_requests"],
        [(r.factor or "off", m, r.home[m], r.served[m]) for r in results for m in members],
    )
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / (len(results) + 1)
    xs = range(len(members))
    ax.bar(
        [x - width for x in xs], [results[0].home[m] for m in members], width, label="home (ring, no load)"
    )
    for i, r in enumerate(results):
        label = f"served, factor {r.factor}" if r.factor else "served, plain hashing"
        ax.bar([x + i * width for x in xs], [r.served[m] for m in members], width, label=label)
    mean = sum(results[0].served.values()) / len(members)
    ax.axhline(mean * FACTOR, color="grey", linestyle="--", linewidth=1, label=f"{FACTOR}x mean")
    ax.set_xticks(list(xs), members)
    ax.set_xlabel("replica")
    ax.set_ylabel("requests")
    ax.set_title(f"A-5: bounded loads, Zipf({ZIPF_EXPONENT}) keys, N={len(members)}\n{params}", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, out / "a5_bounded.png")
    plt.close(fig)


def section(results: Sequence[Bounded], requests: int, concurrency: int, figure: str | None = None) -> str:
    """The report's A-5 section (markdown)."""
    rows = [
        "| LB_BALANCE_FACTOR | busiest / mean | ring's busiest / mean "
        "| cold replicas' requests on their replica | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r.factor or 'unset'} | {r.max_over_mean:.3f} | {r.home_max_over_mean:.3f} "
            f"| {r.cold_stay_share:.1%} ({r.cold_stayed:,} of {r.cold_home:,}) | {r.failed} |"
        )
    figure_block = image("A-5: requests per replica", figure) if figure else ""
    return blocks(
        SECTION,
        para(
            f"{requests:,} requests with Zipf({ZIPF_EXPONENT}) keys over {ZIPF_UNIVERSE:,} ids,",
            f"{REPLICAS} replicas ({DEFAULT_STRATEGY}), at most {concurrency} in flight: the same keys",
            f"through an LB without and one with `LB_BALANCE_FACTOR={FACTOR}` (a request goes to the first",
            "replica in its key's fallback order whose in-flight count is below the factor times the mean,",
            "rounded up).",
            '"Cold" replicas are those whose keys get at most the mean number of requests; some of their',
            "requests move too, when the hot replica's overflow fills them up to the cap for a moment.",
        ),
        "\n".join(rows),
        figure_block,
    )


def put_section(report: Path, text: str) -> None:
    """Replace the A-5 section of an existing report (or append it), leaving the rest as it was."""
    old = report.read_text() if report.exists() else ""
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    report.write_text(new)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.a5", description=__doc__)
    add_common_args(parser, "a5", strategies=False, url=False)
    parser.add_argument("--factor", type=float, default=FACTOR, help="LB_BALANCE_FACTOR of the second LB")
    parser.add_argument("--report", type=Path, help="put the A-5 section into this report (e.g. REPORT.md)")
    parser.add_argument("--figure", help="the figure's path as the report links it")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run A-5; 0 if no request failed."""
    args = build_parser().parse_args(argv)
    keys = zipf_keys(args.requests, args.seed, ZIPF_EXPONENT, ZIPF_UNIVERSE)
    results = run(args.out / "lb", keys, pass_options(args), args.factor)
    write(results, args.out, title_params(args, factor=args.factor))
    text = section(results, args.requests, args.concurrency, args.figure)
    console.print(text)
    if args.report:
        put_section(args.report, text)
    return 0 if all(r.failed == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
