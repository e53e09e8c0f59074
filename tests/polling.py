"""The one way tests wait: poll a predicate every 10 ms until it holds, never sleep a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Poll(Generic[T]):
    """One predicate with a deadline: `check()` returns its truthy value, None to go on, or fails."""

    def __init__(self, predicate: Callable[[], T], timeout: float) -> None:
        self.predicate = predicate
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def check(self) -> T | None:
        value = self.predicate()
        if value:
            return value
        if time.monotonic() > self.deadline:
            raise AssertionError(f"condition not met within {self.timeout}s: {self.predicate}")
        return None


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Poll `predicate` until it returns something truthy and return it; fail the test on timeout."""
    poll = _Poll(predicate, timeout)
    while (value := poll.check()) is None:
        time.sleep(interval)
    return value


async def eventually(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """The event-loop twin of wait_until: lets the loop run callbacks and tasks while polling."""
    poll = _Poll(predicate, timeout)
    while (value := poll.check()) is None:
        await asyncio.sleep(interval)
    return value
