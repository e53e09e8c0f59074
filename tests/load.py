"""Bounded background load for tests: a few threads sending GETs through the LB, counting outcomes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import httpx

from tests.polling import wait_until


@dataclass(kw_only=True)
class BackgroundLoad:
    """`workers` threads, each running `_run(worker, deadline)` until stopped or `max_seconds` passed.

    Each request takes a turn (`_running`), at most `max_requests` in all. The base of every load here.
    """

    workers: int = 4
    max_requests: int = 20_000
    max_seconds: float = 60.0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sent: int = 0

    def __enter__(self) -> Self:
        deadline = time.monotonic() + self.max_seconds
        for w in range(self.workers):
            thread = threading.Thread(target=self._run, args=(w, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _running(self, deadline: float) -> bool:
        """Whether a thread may send one more request (and count it)."""
        if self._stop.is_set() or time.monotonic() >= deadline:
            return False
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
        return True

    def _run(self, worker: int, deadline: float) -> None:
        raise NotImplementedError


@dataclass
class Load(BackgroundLoad):
    """GET /home?id=<k> from every thread, each on its own httpx client."""

    url: str
    new_connections: bool = False  # one connection per request: spread over the processes of LB_WORKERS > 1
    statuses: Counter[int] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least `count` more requests completed (so a phase really ran under load)."""
        target = self.total + count
        deadline = time.monotonic() + timeout
        while self.total < target and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.01)

    def _run(self, worker: int, deadline: float) -> None:
        limits = httpx.Limits(
            max_connections=100, max_keepalive_connections=0 if self.new_connections else 20
        )
        with httpx.Client(base_url=self.url, timeout=10.0, limits=limits) as client:
            k = 0
            while self._running(deadline):
                k += 1
                try:
                    response = client.get("/home", params={"id": f"{worker}-{k % 500}"})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.served_by[response.json()["message"].split(":")[-1].strip()] += 1


def seconds_to_recover(
    url: str,
    kill: Callable[[], object],
    recovered: Callable[[], object],
    timeout: float,
    new_connections: bool = False,
) -> float:
    """Kill a replica in the middle of a bounded GET load; seconds until `recovered()` holds.

    Fails the test if any request of the load failed: clients must never see the kill.
    """
    with Load(url, workers=4, max_requests=30_000, new_connections=new_connections) as load:
        load.wait_for(300)
        killed_at = time.monotonic()
        kill()
        wait_until(recovered, timeout=timeout)
        back_after = time.monotonic() - killed_at
        load.wait_for(300)
    assert load.errors == [], load.errors[:3]
    assert set(load.statuses) == {200}, load.statuses
    return back_after


VOTE_OPTIONS = ("kubernetes", "docker", "helm", "prometheus")  # the default LB_VOTE_OPTIONS


@dataclass
class VoteLoad(BackgroundLoad):
    """Threads casting votes, a new voter each (`<voters>-w<thread>-<k>`): every status, every
    acknowledged vote and every refusal's body kept."""

    url: str
    voters: str = "v"  # a prefix: loads through two LB instances must not share voters
    statuses: Counter[int] = field(default_factory=Counter)
    acked: dict[str, str] = field(default_factory=dict)
    bodies: set[str] = field(default_factory=set)

    def count(self, status: int) -> int:
        with self._lock:
            return self.statuses[status]

    def _run(self, worker: int, deadline: float) -> None:
        with httpx.Client(base_url=self.url, timeout=15.0) as client:
            k = 0
            while self._running(deadline):
                voter, option = f"{self.voters}-w{worker}-{k}", VOTE_OPTIONS[k % 4]
                k += 1
                try:
                    response = client.post(
                        "/api/vote", json={"option": option}, headers={"X-Voter-Id": voter}
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(repr(exc))
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.acked[voter] = option
                    else:
                        self.bodies.add(response.text)
