"""What every experiment shares: key sets, a session on one LB (membership + observed passes), statistics,
progress bars, CSV and figure helpers, and the common command-line flags."""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import matplotlib
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.ring import STRATEGIES, make_strategy
from app.settings import Settings
from experiments.launch import LocalLB, running_lb
from experiments.passes import PassResult, fetch_keys, make_clients

matplotlib.use("Agg")

PACKAGE = Path(__file__).resolve().parent
RESULTS = PACKAGE / "results"
FIGURES = PACKAGE / "figures"
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
# The LB's own default, read from its settings so the report cannot drift from the code.
DEFAULT_STRATEGY: str = str(Settings.model_fields["strategy"].default)
DEFAULT_SEED = 2024  # the seed of bench/ring_bench.py, so both measure the same 10,000 ids
COLORS = {
    "builtin": "#7f7f7f",
    "assignment": "#d62728",
    "sha256": "#ff7f0e",
    "ketama": "#2ca02c",
    "rendezvous": "#1f77b4",
    "maglev": "#9467bd",
}
console = Console()


# ----- keys -------------------------------------------------------------------------------------
def uniform_keys(count: int, seed: int = DEFAULT_SEED) -> list[str]:
    """Distinct random 6-digit request ids (as the course draws them), reproducible from `seed`."""
    return [str(i) for i in random.Random(seed).sample(range(100_000, 1_000_000), count)]


def zipf_keys(
    count: int, seed: int = DEFAULT_SEED, exponent: float = 1.1, universe: int = 10_000
) -> list[str]:
    """`count` requests whose ids follow Zipf(`exponent`) over `universe` distinct ids (rank 1 is hottest)."""
    ids = uniform_keys(universe, seed + 1)
    cumulative = list(itertools.accumulate(1 / rank**exponent for rank in range(1, universe + 1)))
    return random.Random(seed).choices(ids, cum_weights=cumulative, k=count)


# ----- statistics -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spread:
    """Requests per replica and how even they are."""

    counts: dict[str, int]

    @property
    def n(self) -> int:
        return len(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def max(self) -> int:
        return max(self.counts.values(), default=0)

    @property
    def min(self) -> int:
        return min(self.counts.values(), default=0)

    @property
    def max_mean(self) -> float:
        return self.max / self.mean if self.mean else 0.0

    @property
    def min_mean(self) -> float:
        return self.min / self.mean if self.mean else 0.0

    @property
    def cv(self) -> float:
        """Coefficient of variation: population standard deviation / mean."""
        return statistics.pstdev(self.counts.values()) / self.mean if self.mean else 0.0


def spread_of(replicas: Iterable[str | None], members: Sequence[str]) -> Spread:
    """Count answers per member (members that got nothing count as 0; failures are not counted)."""
    counts = Counter(r for r in replicas if r is not None)
    return Spread({name: counts.get(name, 0) for name in natural_sorted(members)})


@dataclass(frozen=True)
class Movement:
    """How many keys changed replica when one replica joined or left."""

    kind: str  # "add" | "remove"
    replica: str
    n_before: int
    n_after: int
    keys: int  # keys answered both times
    moved: int
    cross: int  # moved between two replicas that were not the one added/removed

    @property
    def share(self) -> float:
        return self.moved / self.keys if self.keys else 0.0

    @property
    def ideal(self) -> float:
        """Keys that must move: those of the newcomer, 1/(N+1), or of the leaver, 1/N_before."""
        return 1 / max(self.n_before, self.n_after)

    @property
    def ratio(self) -> float:
        return self.share / self.ideal


def movement_of(
    before: Mapping[str, str], after: Mapping[str, str], kind: str, replica: str, n_before: int, n_after: int
) -> Movement:
    """Compare two key -> replica maps taken around one /add or /rm of `replica`."""
    keys = before.keys() & after.keys()
    moved = cross = 0
    for key in keys:
        old, new = before[key], after[key]
        if old != new:
            moved += 1
            cross += (new if kind == "add" else old) != replica
    return Movement(kind, replica, n_before, n_after, len(keys), moved, cross)


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort "Server 2" before "Server 10"."""
    head = name.rstrip("0123456789")
    tail = name[len(head) :]
    return (head, int(tail) if tail else -1)


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=natural_key)


def predicted(strategy: str, members: Sequence[str], keys: Iterable[str]) -> dict[str, str] | None:
    """key -> replica by the in-process ring (app.ring); None for builtin, salted per process."""
    if strategy == "builtin":
        return None
    ring = make_strategy(strategy).build(list(members))
    return {key: ring.lookup(key) for key in keys}


# ----- passes over HTTP -------------------------------------------------------------------------
@dataclass(frozen=True)
class PassOptions:
    """How a pass sends its requests."""

    concurrency: int = 64
    max_seconds: float = 60.0
    timeout: float = 10.0


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar; yields `set_completed(count)`."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>6.0f} req/s"),
        TimeElapsedColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=console, refresh_per_second=8) as progress:
        task = progress.add_task(label, total=total, rate=0.0)

        def set_completed(count: int) -> None:
            elapsed = time.monotonic() - started
            progress.update(task, completed=count, rate=count / elapsed if elapsed > 0 else 0.0)

        yield set_completed


async def fetch_with_progress(
    url: str,
    keys: Sequence[str],
    label: str,
    opts: PassOptions,
    pace: float | None = None,
    origin: float | None = None,
) -> PassResult:
    """One bounded pass over `keys` with a progress bar (updated by a ticker, not per request)."""
    done = [0]

    def count() -> None:
        done[0] += 1

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(c) for c in make_clients(opts.concurrency, opts.timeout)]
        with progress_bar(label, len(keys)) as set_completed:

            async def tick() -> None:
                while True:
                    set_completed(done[0])
                    await asyncio.sleep(0.1)

            ticker = asyncio.create_task(tick())
            try:
                result = await fetch_keys(
                    clients,
                    url,
                    keys,
                    concurrency=opts.concurrency,
                    max_seconds=opts.max_seconds,
                    on_done=count,
                    pace=pace,
                    origin=origin,
                )
            finally:
                ticker.cancel()
            set_completed(len(keys))
    return result


def run_pass(url: str, keys: Sequence[str], label: str, opts: PassOptions) -> PassResult:
    """Synchronous wrapper around fetch_with_progress."""
    return asyncio.run(fetch_with_progress(url, keys, label, opts))


# ----- a session: one LB, its membership, and what was observed on it ----------------------------
@dataclass(frozen=True)
class Observation:
    """One pass at one membership."""

    strategy: str
    kind: str  # "uniform" (distinct keys) | "zipf"
    members: tuple[str, ...]
    change: tuple[str, str] | None  # ("add" | "remove", replica) since the previous uniform observation
    result: PassResult
    agree: float | None  # share of answers that match the in-process ring; None for builtin

    @property
    def n(self) -> int:
        return len(self.members)

    def spread(self) -> Spread:
        return spread_of((o.replica for o in self.result.outcomes), self.members)


class LBError(RuntimeError):
    """The LB answered a control request with an error."""


@dataclass
class Session:
    """A running LB (started by us or given by --url) and every pass observed on it."""

    url: str
    strategy: str
    keys: list[str]
    opts: PassOptions
    lb: LocalLB | None = None
    observations: list[Observation] = field(default_factory=list)
    _changes: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def attach(cls, url: str, keys: list[str], opts: PassOptions, lb: LocalLB | None = None) -> Session:
        """A session on the LB at `url`; its strategy is read from /status."""
        body = control(url, "GET", "/status")
        return cls(url=url.rstrip("/"), strategy=str(body["strategy"]), keys=keys, opts=opts, lb=lb)

    # membership
    def members(self) -> list[str]:
        body = control(self.url, "GET", "/rep")
        return natural_sorted(body["message"]["replicas"])

    def states(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in control(self.url, "GET", "/status")["replicas"]}

    def add(self) -> str:
        """POST /add one replica with a generated name; returns the name."""
        before = set(self.members())
        body = control(self.url, "POST", "/add", {"n": 1, "hostnames": []})
        (name,) = set(body["message"]["replicas"]) - before
        self._changes.append(("add", name))
        return str(name)

    def remove(self, name: str) -> None:
        """DELETE /rm the named replica."""
        control(self.url, "DELETE", "/rm", {"n": 1, "hostnames": [name]})
        self._changes.append(("remove", name))

    def resize(self, n: int) -> None:
        """Add generated replicas or remove the newest until there are `n`."""
        members = self.members()
        if len(members) < n:
            body = control(self.url, "POST", "/add", {"n": n - len(members), "hostnames": []})
            self._changes += [("add", name) for name in set(body["message"]["replicas"]) - set(members)]
        elif len(members) > n:
            body = control(self.url, "DELETE", "/rm", {"n": len(members) - n, "hostnames": []})
            self._changes += [("remove", name) for name in set(members) - set(body["message"]["replicas"])]

    def wait_all_up(self, timeout: float = 20.0) -> None:
        """Block until every member is up and on the ring (a pass must not race a restart)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.states()
            if rows and all(r["state"] == "up" and r["on_ring"] for r in rows.values()):
                return
            if time.monotonic() > deadline:
                raise LBError(f"replicas not all up within {timeout:g}s: {rows}")
            time.sleep(0.05)

    # observing
    def last(self, kind: str = "uniform") -> Observation | None:
        found = [o for o in self.observations if o.kind == kind]
        return found[-1] if found else None

    def observe(
        self, kind: str = "uniform", keys: Sequence[str] | None = None, label: str = ""
    ) -> Observation:
        """Send one pass at the current membership and record it.

        A uniform pass is skipped (the last one returned) when nothing changed since it was taken.
        """
        members = tuple(self.members())
        previous = self.last(kind)
        if kind == "uniform" and previous is not None and not self._changes and previous.members == members:
            return previous
        self.wait_all_up()
        keys = list(keys if keys is not None else self.keys)
        text = label or f"{self.strategy:>10} N={len(members):<2} {kind}"
        result = run_pass(self.url, keys, text, self.opts)
        expected = predicted(self.strategy, members, set(keys))
        agree = None
        if expected is not None:
            answered = [o for o in result.outcomes if o.replica is not None]
            agree = sum(expected[o.key] == o.replica for o in answered) / len(answered) if answered else 0.0
        change = None
        if kind == "uniform":
            change = self._changes[0] if len(self._changes) == 1 else None
            self._changes = []
        obs = Observation(self.strategy, kind, members, change, result, agree)
        self.observations.append(obs)
        return obs

    def uniform(self) -> list[Observation]:
        return [o for o in self.observations if o.kind == "uniform"]

    def movements(self) -> list[Movement]:
        """One Movement per single-replica step between consecutive uniform observations."""
        found: list[Movement] = []
        uniform = self.uniform()
        for before, after in itertools.pairwise(uniform):
            if after.change is None:
                continue
            kind, replica = after.change
            found.append(
                movement_of(before.result.mapping(), after.result.mapping(), kind, replica, before.n, after.n)
            )
        return found


def control(url: str, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
    """One control-plane call (/rep, /add, /rm, /status); raises LBError unless it answers 200."""
    with httpx.Client(base_url=url, timeout=timeout) as client:
        response = client.request(method, path, json=body)
    if response.status_code != 200:
        raise LBError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
    return response.json()


# ----- files ------------------------------------------------------------------------------------
def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV (floats to 6 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def ratio_axis(ax: Any, values: Iterable[float]) -> None:
    """Log-scaled y axis for max/mean-like ratios (1 to ~7) with plain tick labels."""
    from matplotlib.ticker import NullFormatter

    top = max(values, default=1.0)
    # Fine steps only when the range is narrow, so tick labels never overlap.
    steps = (1, 1.05, 1.1, 1.25, 1.5, 2) if top < 2 else (1, 1.25, 1.5, 2, 3, 5, 7, 10, 15)
    ticks = [t for t in steps if t <= top * 1.3]
    ax.set_yscale("log")
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0.97, top * 1.35)


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib Figure as PNG (tight bounding box)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ----- command line -----------------------------------------------------------------------------
def add_common_args(
    parser: argparse.ArgumentParser,
    out: str,
    strategies: bool = True,
    url: bool = True,
    requests: bool = True,
) -> None:
    """The flags every experiment takes: target LB, pass size and pacing, output folder."""
    if url:
        parser.add_argument(
            "--url",
            help="use the LB running at this URL (its strategy is read from /status); "
            "default: start `python -m app` on a free loopback port and stop it after",
        )
    if requests:
        parser.add_argument("--requests", type=int, default=10_000, help="requests (distinct keys) per pass")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random 6-digit ids")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time limit of one pass")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS / out, help="folder for CSV, PNG and LB logs")
    if strategies:
        parser.add_argument(
            "--strategies",
            nargs="+",
            choices=STRATEGY_NAMES,
            default=list(STRATEGY_NAMES),
            help="strategies to run, one LB each (ignored with --url)",
        )


def pass_options(args: argparse.Namespace) -> PassOptions:
    return PassOptions(args.concurrency, args.max_seconds, args.timeout)


def sessions(args: argparse.Namespace, replicas: int, keys: list[str]) -> Iterator[Session]:
    """One session per strategy on an LB started for it (`replicas` at boot), or one on --url."""
    opts = pass_options(args)
    if args.url:
        yield Session.attach(args.url, keys, opts)
        return
    for strategy in args.strategies:
        with running_lb(strategy, replicas, args.out / "lb") as lb:
            yield Session.attach(lb.url, keys, opts, lb)


def title_params(args: argparse.Namespace, **extra: Any) -> str:
    """The parameters line of a figure title."""
    parts = [f"{args.requests:,} requests", f"seed {args.seed}", f"concurrency {args.concurrency}"]
    parts += [f"{k} {v}" for k, v in extra.items()]
    return ", ".join(parts)
