"""A-3: failover under load. A steady stream of requests runs while one replica process is SIGKILLed.

The replica's pid is found among the LB's children (/proc/<lb>/task/*/children) by SERVER_ID in
/proc/<pid>/environ. Measured: when /status and the LB log first show the replica down, when the
replacement is up (/status, log) and first answers a request, and every client error. Writes
a3_requests.csv (every request), a3_status.csv (the /status polls), a3_events.csv, a3_summary.csv and
a3_timeline.png (requests per second per replica and failed requests) into --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from matplotlib.figure import Figure

from app.ring import make_strategy
from experiments.common import (
    DEFAULT_STRATEGY,
    PassOptions,
    Session,
    add_common_args,
    console,
    fetch_with_progress,
    natural_sorted,
    pass_options,
    save_figure,
    uniform_keys,
    write_csv,
)
from experiments.launch import running_lb
from experiments.passes import PassResult

RATE, DURATION, KILL_AT, POLL = 1000.0, 12.0, 4.0, 0.02
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
# The LB's lifecycle lines: logfmt `event=down replica="Server 2" ...`, or older prose `replica X: down`.
_EVENT = re.compile(r'event=(down|up) replica=("(?:[^"\\]|\\.)*"|\S+)')
_PROSE = re.compile(r"replica (.+?): (down|up)\b")


@dataclass
class Failover:
    """Everything one failover run observed; times are seconds since the stream started."""

    strategy: str
    victim: str
    victim_pid: int
    members: list[str]
    rate: float
    duration: float
    kill_at: float
    result: PassResult
    polls: list[tuple[float, str, bool, str | None, int]] = field(default_factory=list)
    log_events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, down|up, line)
    killed: float = 0.0
    killed_wall: float = 0.0  # time.time() of the kill: the LB log's clock

    def _first_poll(self, after: float, up: bool, address: str | None = None) -> float | None:
        for t, state, on_ring, addr, _ in self.polls:
            if t < after:
                continue
            is_up = state == "up" and on_ring
            if up and is_up and addr != address:
                return t
            if not up and not is_up:
                return t
        return None

    @property
    def old_address(self) -> str | None:
        before = [addr for t, _, _, addr, _ in self.polls if t < self.killed]
        return before[-1] if before else None

    @property
    def down_status(self) -> float | None:
        return self._first_poll(self.killed, up=False)

    @property
    def up_status(self) -> float | None:
        down = self.down_status
        return None if down is None else self._first_poll(down, up=True, address=self.old_address)

    def _log(self, what: str) -> float | None:
        times = [t for t, event, _ in self.log_events if event == what and t >= self.killed - 0.01]
        return min(times) if times else None

    def down_line(self) -> str:
        """The LB's log line for the victim going down (without the timestamp)."""
        lines = [line for t, event, line in self.log_events if event == "down" and t >= self.killed - 0.01]
        return lines[0] if lines else ""

    @property
    def down_log(self) -> float | None:
        return self._log("down")

    @property
    def up_log(self) -> float | None:
        return self._log("up")

    @property
    def first_served(self) -> float | None:
        """When a request sent after the kill was first answered by the victim's name (the replacement)."""
        times = [o.done for o in self.result.outcomes if o.replica == self.victim and o.sent > self.killed]
        return min(times) if times else None

    @property
    def errors(self) -> int:
        return self.result.failed

    @property
    def restarts(self) -> int:
        return self.polls[-1][4] if self.polls else 0

    def rerouted(self) -> int:
        """Requests for the victim's keys that another replica answered between the kill and its return."""
        ring = make_strategy(self.strategy).build(self.members) if self.strategy != "builtin" else None
        end = self.first_served if self.first_served is not None else float("inf")
        if ring is None:
            return 0
        return sum(
            1
            for o in self.result.outcomes
            if self.killed <= o.sent < end
            and o.replica not in (None, self.victim)
            and ring.lookup(o.key) == self.victim
        )


def agreement_after(fo: Failover, start: float | None) -> str:
    """Share of requests sent after `start` answered by the replica the in-process ring names."""
    if start is None or fo.strategy == "builtin":
        return "n/a"
    ring = make_strategy(fo.strategy).build(fo.members)
    after = [o for o in fo.result.outcomes if o.sent > start and o.replica is not None]
    if not after:
        return "n/a"
    return f"{sum(ring.lookup(o.key) == o.replica for o in after) / len(after):.2%} of {len(after)}"


def since(t: float | None, origin: float) -> str:
    return "n/a" if t is None else f"{(t - origin) * 1000:.0f} ms"


def parse_log(text: str, victim: str, wall_origin: float) -> list[tuple[float, str, str]]:
    """(seconds since the stream started, "down" | "up", the line after its timestamp) for the victim."""
    events = []
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        found: tuple[str, str] | None = None
        if (match := _EVENT.search(line)) is not None:
            raw = match.group(2)
            found = (json.loads(raw) if raw.startswith('"') else raw, match.group(1))
        elif (match := _PROSE.search(line)) is not None:
            found = (match.group(1), match.group(2))
        if found is not None and found[0] == victim:
            when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((when - wall_origin, found[1], line[stamp.end() :].strip()))
    return events


async def run_failover(
    url: str,
    lb_pid: int,
    victim: str,
    keys: Sequence[str],
    opts: PassOptions,
    rate: float,
    duration: float,
    kill_at: float,
    poll: float,
) -> Failover:
    """Stream `rate` req/s for `duration` s, SIGKILL `victim` at `kill_at`, poll /status throughout."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
        members = natural_sorted((await client.get("/rep")).json()["message"]["replicas"])
        status = (await client.get("/status")).json()
        strategy = str(status["strategy"])
        pids = {row["name"]: row["pid"] for row in status["replicas"] if row.get("pid")}
        if victim not in pids:
            raise RuntimeError(f"/status of LB {lb_pid} gives no pid for replica {victim!r}: {pids}")
        origin = loop.time()
        stream = asyncio.create_task(
            fetch_with_progress(url, keys, f"A-3 {strategy} kill {victim}", opts, pace=rate, origin=origin)
        )
        polls: list[tuple[float, str, bool, str | None, int]] = []
        killed = killed_wall = 0.0
        limit = origin + duration + 30  # bounded even if the stream hangs
        while not stream.done() and loop.time() < limit:
            if not killed and loop.time() - origin >= kill_at:
                os.kill(pids[victim], signal.SIGKILL)
                killed, killed_wall = loop.time() - origin, time.time()
            try:
                body = (await client.get("/status")).json()
                row = next((r for r in body["replicas"] if r["name"] == victim), None)
                if row is not None:
                    polls.append(
                        (
                            loop.time() - origin,
                            row["state"],
                            bool(row["on_ring"]),
                            row["address"],
                            row["restarts"],
                        )
                    )
            except httpx.HTTPError:
                pass
            await asyncio.sleep(poll)
        result = await stream
    failover = Failover(strategy, victim, pids[victim], members, rate, duration, kill_at, result, polls)
    failover.killed, failover.killed_wall = killed, killed_wall
    return failover


def write(fo: Failover, out: Path, log_text: str | None) -> dict[str, str]:
    """CSV files and the timeline; returns the summary as text values."""
    if log_text is not None:
        # Log times are wall-clock: place them relative to the wall-clock instant of the kill.
        fo.log_events = parse_log(log_text, fo.victim, fo.killed_wall - fo.killed)
    write_csv(
        out / "a3_requests.csv",
        ["key", "sent_s", "done_s", "status", "replica", "error"],
        [(o.key, o.sent, o.done, o.status, o.replica or "", o.error or "") for o in fo.result.outcomes],
    )
    write_csv(out / "a3_status.csv", ["t_s", "state", "on_ring", "address", "restarts"], fo.polls)
    events = [
        ("kill (SIGKILL)", fo.killed),
        ("down in /status", fo.down_status),
        ("down in LB log", fo.down_log),
        ("up in /status (new address)", fo.up_status),
        ("up in LB log", fo.up_log),
        ("replacement serves a request", fo.first_served),
    ]
    write_csv(
        out / "a3_events.csv",
        ["event", "t_s", "after_kill_ms"],
        [(name, "" if t is None else t, "" if t is None else (t - fo.killed) * 1000) for name, t in events],
    )
    statuses = Counter(o.status for o in fo.result.outcomes)
    summary = {
        "strategy": fo.strategy,
        "replicas": str(len(fo.members)),
        "victim": fo.victim,
        "rate_req_s": f"{fo.rate:g}",
        "duration_s": f"{fo.duration:g}",
        "kill_at_s": f"{fo.killed:.3f}",
        "requests": str(len(fo.result.outcomes)),
        "ok": str(fo.result.ok),
        "client_errors": str(fo.errors),
        "statuses": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
        "detect_status_ms": since(fo.down_status, fo.killed),
        "detect_log_ms": since(fo.down_log, fo.killed),
        "up_status_ms": since(fo.up_status, fo.killed),
        "up_log_ms": since(fo.up_log, fo.killed),
        "first_served_ms": since(fo.first_served, fo.killed),
        "rerouted": str(fo.rerouted()),
        "ring_agreement_after_return": agreement_after(fo, fo.up_status),
        "restarts": str(fo.restarts),
        "victim_pid": str(fo.victim_pid),
        "down_log_line": fo.down_line(),
        "achieved_req_s": f"{len(fo.result.outcomes) / max(fo.result.seconds, 1e-9):.0f}",
    }
    write_csv(out / "a3_summary.csv", list(summary), [list(summary.values())])
    plot(fo, out / "a3_timeline.png")
    return summary


def rates(fo: Failover, bin_s: float, lo: float, hi: float) -> tuple[list[float], dict[str, list[float]]]:
    """Bin centres and, per replica (and "failed"), answers per second in bins of `bin_s` within [lo, hi)."""
    count = max(1, int((hi - lo) / bin_s))
    per: dict[str, list[float]] = defaultdict(lambda: [0.0] * count)
    for o in fo.result.outcomes:
        b = int((o.done - lo) / bin_s)
        if 0 <= b < count:
            per[o.replica if o.replica is not None else "failed"][b] += 1 / bin_s
    per["failed"]  # always plotted, even when empty
    return [lo + (b + 0.5) * bin_s for b in range(count)], per


def plot(fo: Failover, path: Path) -> Path:
    """Top: requests per second per replica and failed requests over the run. Bottom: the second around
    the kill in finer bins, with the failover events."""
    fig = Figure(figsize=(13, 8.5))
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1.1])
    end = min(fo.duration, max((o.done for o in fo.result.outcomes), default=0.0))
    zoom_lo, zoom_hi = max(0.0, fo.killed - 0.5), min(end, fo.killed + 1.0)
    panels = [(top, 0.25, 0.0, end), (bottom, 0.05, zoom_lo, zoom_hi)]
    for ax, bin_s, lo, hi in panels:
        x, per = rates(fo, bin_s, lo, hi)
        for name in natural_sorted(k for k in per if k != "failed"):
            ax.plot(x, per[name], label=name, linewidth=1.5, drawstyle="steps-mid")
        ax.plot(
            x,
            per["failed"],
            color="red",
            linestyle=":",
            linewidth=2,
            label=f"failed requests ({fo.errors} in all)",
        )
        ax.set_xlabel(f"seconds since the stream started (bins of {bin_s * 1000:g} ms, by answer time)")
        ax.set_ylabel("requests per second")
        ax.set_ylim(bottom=0)
    marks = [
        (fo.killed, "SIGKILL", "black", "-"),
        (fo.down_log, "down in LB log", "tab:red", "-."),
        (fo.down_status, "down in /status", "tab:red", "--"),
        (fo.up_status, "up in /status", "tab:green", "--"),
        (fo.first_served, "replacement serves", "tab:purple", "-."),
    ]
    top.axvspan(zoom_lo, zoom_hi, color="grey", alpha=0.15, label="zoomed below")
    for t, label, color, style in marks:
        if t is not None:
            bottom.axvline(
                t,
                color=color,
                linestyle=style,
                linewidth=1.2,
                label=f"{label} ({(t - fo.killed) * 1000:+.0f} ms)",
            )
    top.axvline(fo.killed, color="black", linewidth=1)
    for ax in (top, bottom):
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.set_title(
        f"A-3: SIGKILL of {fo.victim} under load ({fo.strategy}, N={len(fo.members)}, "
        f"{fo.rate:g} req/s for {fo.duration:g} s, kill at {fo.killed:.2f} s)"
    )
    bottom.set_title("around the kill")
    fig.tight_layout()
    return save_figure(fig, path)


def run(
    session: Session,
    args: argparse.Namespace,
    victim: str | None = None,
    lb_pid: int | None = None,
    log_path: Path | None = None,
) -> dict[str, str]:
    """A-3 on a session's LB (brought to args.replicas members first); args from build_parser()."""
    session.resize(args.replicas)
    session.wait_all_up()
    members = natural_sorted(session.members())
    victim = victim or members[min(1, len(members) - 1)]
    pid = lb_pid or (session.lb.pid if session.lb else None)
    if pid is None:
        raise SystemExit("A-3 needs the LB's pid to find the replica process: pass --lb-pid with --url")
    count = int(args.rate * args.duration)
    keys = uniform_keys(count, args.seed + 3)
    fo = asyncio.run(
        run_failover(
            session.url,
            pid,
            victim,
            keys,
            pass_options(args),
            args.rate,
            args.duration,
            args.kill_at,
            args.poll,
        )
    )
    log = log_path or (session.lb.log_path if session.lb else None)
    summary = write(fo, args.out, log.read_text(errors="replace") if log else None)
    session.wait_all_up()
    return summary


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", default=DEFAULT_STRATEGY, help="strategy of the LB this script starts")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--rate", type=float, default=RATE, help="requests per second of the stream")
    parser.add_argument("--duration", type=float, default=DURATION, help="seconds of streaming")
    parser.add_argument("--kill-at", type=float, default=KILL_AT, help="seconds into the stream")
    parser.add_argument("--poll", type=float, default=POLL, help="seconds between /status polls")
    parser.add_argument("--victim", help="replica to kill (default: the second in natural order)")
    parser.add_argument("--lb-pid", type=int, help="pid of the LB at --url (its replicas are its children)")
    parser.add_argument("--lb-log", type=Path, help="log file of the LB at --url (for the 'down' line)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.a3", description=__doc__)
    add_common_args(parser, "a3", strategies=False, requests=False)
    add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start an LB (or use --url with --lb-pid), stream requests, kill one replica, write the results."""
    args = build_parser().parse_args(argv)
    opts = pass_options(args)
    if args.url:
        summary = run(Session.attach(args.url, [], opts), args, args.victim, args.lb_pid, args.lb_log)
    else:
        with running_lb(args.strategy, args.replicas, args.out / "lb") as lb:
            summary = run(Session.attach(lb.url, [], opts, lb), args, args.victim)
    for key, value in summary.items():
        console.print(f"{key:>18}: {value}")
    console.print(f"A-3 results in {args.out}")
    return 0 if summary["client_errors"] == "0" else 1


if __name__ == "__main__":
    raise SystemExit(main())
