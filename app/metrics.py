"""Request and lifecycle counters: plain ints bumped on the hot path, exported by /metrics at scrape time.

No prometheus-client call per request: a proxied request costs a dict lookup, two clock reads and a few
integer increments here. Independent of app.control and app.dataplane, so both can report into it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Any

# Upstream latency buckets, seconds (Prometheus `le` bounds); the last bucket is +Inf.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECENT = 1024  # latencies kept per replica for /status's p99 (the last RECENT requests)
_RECENT_MASK = RECENT - 1
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class ReplicaStats:
    """Counters of one replica (by name: they survive its replacement under the same name)."""

    __slots__ = (
        "by_class",
        "buckets",
        "diverted",
        "errors",
        "latency_sum",
        "recent",
        "recent_count",
        "retries",
    )

    def __init__(self) -> None:
        self.by_class = [0] * 10  # index = status // 100; httptools statuses have three digits
        self.errors = 0  # attempts that got no response (refused, reset, timeout)
        self.retries = 0  # requests re-sent to the next replica after this one failed
        self.diverted = 0  # requests for this replica's keys sent elsewhere by bounded loads
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latency_sum = 0.0
        self.recent = [0.0] * RECENT
        self.recent_count = 0

    def __reduce__(self) -> tuple[type[ReplicaStats], tuple[()], tuple[object, ...]]:
        """Pickle as constructor + state: workers send their counters (compiled classes have no __dict__)."""
        state = (self.by_class, self.buckets, self.errors, self.retries, self.diverted, self.latency_sum)
        return (ReplicaStats, (), (*state, self.recent, self.recent_count))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        """The other half of __reduce__."""
        (self.by_class, self.buckets, self.errors, self.retries, self.diverted, self.latency_sum) = state[:6]
        self.recent, self.recent_count = state[6:]

    def observe(self, status: int, seconds: float) -> None:
        """One response from the replica, `seconds` after the request left."""
        self.by_class[status // 100] += 1
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds
        n = self.recent_count
        self.recent[n & _RECENT_MASK] = seconds
        self.recent_count = n + 1

    @property
    def requests(self) -> int:
        """Requests proxied to the replica: answered (any status) or failed."""
        return sum(self.by_class) + self.errors

    def window(self) -> list[float]:
        """The latencies kept for the p99 (the last RECENT; across processes, each one's last RECENT)."""
        return self.recent[: min(self.recent_count, len(self.recent))]

    def latency_p99(self) -> float | None:
        """p99 of the window's upstream latencies in seconds; None before the first response."""
        window = self.window()
        if not window:
            return None
        ordered = sorted(window)
        return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]  # nearest rank: ceil(0.99 n)-th smallest

    def add(self, other: ReplicaStats, *, window: bool) -> None:
        """Fold another process's counters into these (LB_WORKERS); with `window`, its latencies too.

        Only for a merged copy: the window then grows past RECENT, which observe() would not expect.
        """
        self.by_class = [a + b for a, b in zip(self.by_class, other.by_class, strict=True)]
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.errors += other.errors
        self.retries += other.retries
        self.diverted += other.diverted
        self.latency_sum += other.latency_sum
        if window:
            self.recent = self.window() + other.window()
            self.recent_count = len(self.recent)


class Stats:
    """Every counter of one LB: per replica, the LB's own error answers, ring rebuilds, health transitions."""

    __slots__ = (
        "h2_requests",
        "http1_requests",
        "in_flight",
        "lb_responses",
        "replicas",
        "ring_rebuilds",
        "tls_handshake_failures",
        "transitions",
    )

    def __init__(self) -> None:
        self.replicas: dict[str, ReplicaStats] = {}
        self.lb_responses: Counter[int] = Counter()  # status -> answers the LB made itself (4xx/5xx)
        self.ring_rebuilds = 0
        self.transitions: Counter[tuple[str, str]] = Counter()  # (replica, new state) -> count
        # A worker's requests in flight per replica when it sent this snapshot (a gauge, never added up:
        # the owner's own are on its upstream pools).
        self.in_flight: dict[str, int] = {}
        self.http1_requests = 0  # requests by the client's protocol (HTTP/1.x, plain or TLS)
        self.h2_requests = 0  # ... HTTP/2 streams
        self.tls_handshake_failures = 0

    def __reduce__(self) -> tuple[type[Stats], tuple[()], tuple[object, ...]]:
        """Pickle as constructor + state (see ReplicaStats.__reduce__)."""
        state = (self.replicas, self.lb_responses, self.ring_rebuilds, self.transitions, self.in_flight)
        return (Stats, (), (*state, self.http1_requests, self.h2_requests, self.tls_handshake_failures))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        """The other half of __reduce__."""
        self.replicas, self.lb_responses, self.ring_rebuilds, self.transitions, self.in_flight = state[:5]
        self.http1_requests, self.h2_requests, self.tls_handshake_failures = state[5:]

    def replica(self, name: str) -> ReplicaStats:
        """The replica's counters, created on first use."""
        found = self.replicas.get(name)
        if found is None:
            found = self.replicas[name] = ReplicaStats()
        return found

    def replied(self, status: int) -> None:
        """The LB answered a request itself with `status` (not a replica's answer)."""
        self.lb_responses[status] += 1

    def ring_rebuilt(self) -> None:
        """The control plane swapped in a new routing table."""
        self.ring_rebuilds += 1

    def transition(self, name: str, state: str) -> None:
        """The control plane moved replica `name` into `state` (up, down, draining, ...)."""
        self.transitions[(name, str(state))] += 1

    def proxied(self) -> int:
        """Requests proxied to any replica, answered or failed."""
        return sum(rs.requests for rs in self.replicas.values())

    def activity(self) -> int:
        """A number that grows with every request counted (a worker with nothing new sends nothing)."""
        return self.proxied() + sum(self.lb_responses.values()) + self.http1_requests + self.h2_requests

    def add(self, other: Stats, *, window: bool = True) -> None:
        """Fold another process's counters into these (see ReplicaStats.add)."""
        for name, counters in other.replicas.items():
            self.replica(name).add(counters, window=window)
        self.lb_responses.update(other.lb_responses)
        self.ring_rebuilds += other.ring_rebuilds
        self.http1_requests += other.http1_requests
        self.h2_requests += other.h2_requests
        self.tls_handshake_failures += other.tls_handshake_failures
        self.transitions.update(other.transitions)


class WorkerStats:
    """The counters of the other data-plane processes (LB_WORKERS), as the owner last heard them.

    Workers send a snapshot of their Stats now and then; a worker that goes away leaves its last one
    in `retired`, so totals never go back when it is restarted (its latency window is dropped).
    """

    def __init__(self) -> None:
        self.live: dict[int, Stats] = {}  # worker pid -> its last snapshot
        self.retired = Stats()

    def update(self, pid: int, snapshot: Stats) -> None:
        """Worker `pid` sent its counters (totals since it started)."""
        self.live[pid] = snapshot

    def retire(self, pid: int) -> None:
        """Worker `pid` is gone: keep its counts, forget its window."""
        gone = self.live.pop(pid, None)
        if gone is not None:
            self.retired.add(gone, window=False)

    def in_flight(self, name: str) -> int:
        """Requests to replica `name` in flight in the live workers, as they last reported."""
        return sum(snapshot.in_flight.get(name, 0) for snapshot in self.live.values())

    def merged_with(self, own: Stats) -> Stats:
        """A new Stats: `own` plus every worker's, live and retired (for /metrics and /status)."""
        total = Stats()
        for part in (own, self.retired, *self.live.values()):
            total.add(part)
        return total
