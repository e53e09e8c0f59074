"""Run A-1..A-5 and write REPORT.md: what `make experiments` (and `make experiments-report`) run.

One LB per strategy serves A-1 (its N=3 pass), A-2 (the sweep), the HTTP parts of A-4 (Zipf keys,
and for the restart check a second LB with another PYTHONHASHSEED) and, for the default strategy, A-3.
A-5 (bounded loads) runs on two LBs of its own at the end. The next strategy's LB starts while the
current one is measured. CSV and PNG go to --out/<a1..a5>/; the figures the report shows are copied to
--figures. By default all of it stays in the ignored results folder; the committed experiments/REPORT.md
and experiments/figures/ change only when named explicitly.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from experiments import a1, a2, a3, a4, a5
from experiments.common import (
    DEFAULT_STRATEGY,
    RESULTS,
    Observation,
    Session,
    add_common_args,
    console,
    pass_options,
    title_params,
    uniform_keys,
    zipf_keys,
)
from experiments.launch import LocalLB, launch_lb
from experiments.report import Figures, Meta, ReportData, render

REPORT_FIGURES = {
    "a1": "a1/a1_requests_per_replica.png",
    "a2_load": "a2/a2_load_per_replica.png",
    "a2_balance": "a2/a2_balance_and_moves.png",
    "a3": "a3/a3_timeline.png",
    "a4": "a4/a4_comparison.png",
    "a4_slots": "a4/a4_assignment_slots.png",
    "a5": "a5/a5_bounded.png",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.run_all", description=__doc__)
    add_common_args(parser, "", url=False)
    parser.set_defaults(out=RESULTS)
    a2.add_args(parser)
    a4.add_args(parser)
    parser.add_argument("--rate", type=float, default=a3.RATE, help="A-3: requests per second")
    parser.add_argument("--duration", type=float, default=a3.DURATION, help="A-3: seconds of streaming")
    parser.add_argument("--kill-at", type=float, default=a3.KILL_AT, help="A-3: seconds into the stream")
    parser.add_argument("--poll", type=float, default=a3.POLL, help="A-3: seconds between /status polls")
    # Defaults stay in the ignored results folder; `make experiments-report` passes the committed paths.
    parser.add_argument(
        "--figures", type=Path, default=RESULTS / "figures", help="where the report's PNGs are copied"
    )
    parser.add_argument("--report", type=Path, default=RESULTS / "REPORT.md", help="the Markdown report")
    return parser


def a3_args(args: argparse.Namespace) -> argparse.Namespace:
    """A-3's own namespace, from run_all's flags."""
    argv = [
        "--out", str(args.out / "a3"), "--seed", str(args.seed), "--concurrency", str(args.concurrency),
        "--timeout", str(args.timeout), "--max-seconds",
        str(max(args.max_seconds, args.duration + 10)), "--rate", str(args.rate), "--duration",
        str(args.duration), "--kill-at", str(args.kill_at), "--poll", str(args.poll),
    ]  # fmt: skip
    return a3.build_parser().parse_args(argv)


def report_failed_lbs(launched: list[LocalLB]) -> None:
    """Show the log tail of any LB that exited on its own (SIGTERM from us exits with 0)."""
    for lb in launched:
        code = lb.proc.poll()
        if code not in (None, 0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after a clean shutdown
            console.print(f"LB {lb.strategy} on {lb.url} exited with {code}; log tail:\n{lb.log()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    """Run everything, write the CSVs, figures and the report; 0 if no request failed."""
    args = build_parser().parse_args(argv)
    started, t0, load0 = datetime.now().astimezone(), time.monotonic(), os.getloadavg()
    opts = pass_options(args)
    keys = uniform_keys(args.requests, args.seed)
    hot = zipf_keys(args.requests, args.seed, a4.ZIPF_EXPONENT, a4.ZIPF_UNIVERSE)
    lbdir = args.out / "lb"
    strategies: list[str] = list(args.strategies)
    sessions: list[Session] = []
    at3: list[Observation] = []
    zipfs: list[Observation] = []
    restarts: dict[str, a4.Restart] = {}
    a3_summary: dict[str, str] | None = None
    lb_starts = 0

    launched: list[LocalLB] = []
    with ExitStack() as stack:
        stack.callback(report_failed_lbs, launched)

        def launch(strategy: str, replicas: int, hashseed: str = a4.SEED_A) -> LocalLB:
            nonlocal lb_starts
            lb_starts += 1
            lb = launch_lb(strategy, replicas, lbdir, hashseed=hashseed)
            launched.append(lb)
            stack.callback(lb.stop)  # stops it on any exit; stopping twice is harmless
            return lb

        upcoming = launch(strategies[0], args.min_n)
        for i, strategy in enumerate(strategies):
            lb = upcoming
            lb.wait_ready()
            if i + 1 < len(strategies):
                upcoming = launch(strategies[i + 1], args.min_n)
            session = Session.attach(lb.url, keys, opts, lb)
            sessions.append(session)
            a2.grow(session, 3)
            at3.append(a1.measure(session))
            zipfs.append(a4.zipf(session, hot))
            if strategy == DEFAULT_STRATEGY:
                a3_summary = a3.run(session, a3_args(args))
            second = launch(strategy, 3, a4.SEED_B) if strategy in args.restart_check else None
            top, down = a2.default_plan(strategy, args)
            a2.grow(session, top)
            a2.shrink(session, args.min_n, down, args.seed)
            lb.stop()
            if second is not None:
                restarts[strategy] = a4.restart_check(strategy, at3[-1], keys, opts, lbdir, launched=second)
        if a3_summary is None:  # the default strategy was not among --strategies: A-3 on its own LB
            lb = launch(DEFAULT_STRATEGY, 3)
            lb.wait_ready()
            a3_summary = a3.run(Session.attach(lb.url, keys, opts, lb), a3_args(args))
            lb.stop()

    bounded = a5.run(lbdir, hot, opts)
    lb_starts += len(bounded)
    params = title_params(args)
    console.print("writing CSV and figures ...")
    a1_rows = a1.write(at3, args.out / "a1", params)
    sweeps = [a2.collect(s) for s in sessions]
    a2.write(sweeps, args.out / "a2", params)
    lookups = a4.lookup_table(strategies, keys)
    comparisons = [
        a4.compare(s, z, lookups, restarts.get(s.strategy), top_n=args.max_n)
        for s, z in zip(sessions, zipfs, strict=True)
    ]
    slots = a4.slot_analysis(keys)
    a4.write(comparisons, slots, zipfs, args.out / "a4", params)
    a5.write(bounded, args.out / "a5", params)
    args.figures.mkdir(parents=True, exist_ok=True)
    figures = {}
    for name, rel in REPORT_FIGURES.items():
        target = args.figures / Path(rel).name
        shutil.copyfile(args.out / rel, target)
        figures[name] = os.path.relpath(target, args.report.parent)
    total = sum(len(o.result.outcomes) for s in sessions for o in s.observations)
    total += sum(r.keys for r in restarts.values()) + int(a3_summary["requests"]) + len(bounded) * len(hot)
    seconds = time.monotonic() - t0
    meta = Meta(
        started=started.strftime("%Y-%m-%d %H:%M %Z"),
        seconds=seconds,
        cpus=os.cpu_count() or 0,
        load_before=load0[0],
        load_after=os.getloadavg()[0],
        python=platform.python_version(),
        requests=args.requests,
        seed=args.seed,
        concurrency=args.concurrency,
        lb_starts=lb_starts,
        total_requests=total,
        argv=list(argv) if argv is not None else None,
    )
    a5_text = a5.section(bounded, args.requests, args.concurrency, figures["a5"])
    data = ReportData(
        meta, args, a1_rows, sweeps, a3_summary, comparisons, slots, zipfs, Figures(**figures), a5_text
    )
    args.report.write_text(render(data))
    console.print(f"report: {args.report} ({seconds:.0f} s, {total:,} requests, {lb_starts} LB starts)")
    failed = (
        sum(r.failed for r in comparisons) + int(a3_summary["client_errors"]) + sum(b.failed for b in bounded)
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
