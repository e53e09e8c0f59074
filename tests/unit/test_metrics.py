"""Counters across data-plane processes: merged totals, a dead worker's counts kept, p99 over every window."""

from __future__ import annotations

import pickle

from app.metrics import RECENT, Stats, WorkerStats


def served(latencies: list[float], status: int = 200, name: str = "a") -> Stats:
    stats = Stats()
    for seconds in latencies:
        stats.replica(name).observe(status, seconds)
    return stats


def test_a_snapshot_survives_the_trip_between_processes() -> None:
    stats = served([0.01, 0.02])
    stats.replica("a").errors += 1
    stats.replied(504)
    copy = pickle.loads(pickle.dumps(stats, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy.proxied() == 3 and copy.lb_responses == {504: 1}
    assert copy.replica("a").window() == [0.01, 0.02]


def test_merged_totals_add_every_process_and_leave_the_parts_alone() -> None:
    own = served([0.001] * 3)
    workers = WorkerStats()
    workers.update(101, served([0.002] * 5, status=503))
    workers.update(102, served([0.003] * 2, name="b"))
    total = workers.merged_with(own)
    assert total.proxied() == 10
    assert total.replica("a").by_class[2] == 3 and total.replica("a").by_class[5] == 5
    assert sum(total.replica("a").buckets) == 8
    assert total.replica("b").requests == 2
    assert own.proxied() == 3 and workers.live[101].proxied() == 5  # the parts are not changed


def test_totals_never_go_back_when_a_worker_is_replaced() -> None:
    own = Stats()
    workers = WorkerStats()
    workers.update(101, served([0.001] * 7))
    before = workers.merged_with(own).proxied()
    workers.retire(101)  # its process died: its last snapshot stays counted
    workers.update(202, served([0.001] * 2))  # its replacement starts from zero
    assert before == 7
    assert workers.merged_with(own).proxied() == 9
    workers.retire(202)
    workers.retire(202)  # a second report of the same exit changes nothing
    assert workers.merged_with(own).proxied() == 9


def test_p99_is_taken_over_every_live_process_window() -> None:
    own = served([0.001] * RECENT)  # a full window of fast answers here...
    workers = WorkerStats()
    workers.update(101, served([1.0] * RECENT))  # ...and a full one of slow ones in a worker
    assert workers.merged_with(own).replica("a").latency_p99() == 1.0
    assert own.replica("a").latency_p99() == 0.001
    workers.retire(101)  # a dead worker's latencies are no longer recent
    assert workers.merged_with(own).replica("a").latency_p99() == 0.001


def test_activity_moves_with_every_count() -> None:
    stats = Stats()
    marks = [stats.activity()]
    stats.replica("a").observe(200, 0.01)
    marks.append(stats.activity())
    stats.replica("a").errors += 1
    marks.append(stats.activity())
    stats.replied(503)
    marks.append(stats.activity())
    assert marks == sorted(set(marks))
