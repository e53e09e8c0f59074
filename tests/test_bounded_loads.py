"""Bounded loads (LB_BALANCE_FACTOR): the pure choice, and Zipf(1.1) traffic through real LBs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.dataplane.balance import load_cap, pick_bounded
from app.ring import make_strategy
from experiments import a5
from experiments.a4 import ZIPF_EXPONENT, ZIPF_UNIVERSE
from experiments.common import PassOptions, zipf_keys
from tests.conftest import echo_command


@dataclass
class Load:
    """What pick_bounded reads from an UpstreamPool."""

    in_flight: int = 0


def test_the_cap_is_factor_times_the_mean_rounded_up_and_at_least_one() -> None:
    assert load_cap(0, 4, 1.25) == 1
    assert load_cap(3, 4, 1.25) == 1  # ceil(0.9375)
    assert load_cap(64, 4, 1.25) == 20
    assert load_cap(63, 4, 1.25) == 20  # ceil(19.69)
    assert load_cap(10, 3, 2.0) == 7


def test_a_key_stays_home_until_its_replica_reaches_the_cap() -> None:
    ring = make_strategy("rendezvous").build(["a", "b", "c", "d"])
    key = "123456"
    order = list(ring.successors(key))
    loads = {name: Load(4) for name in order}
    assert pick_bounded(ring, key, loads, 1.25) == order[0]  # 4 < ceil(1.25 x 4) = 5
    loads[order[0]].in_flight = 5
    assert pick_bounded(ring, key, loads, 1.25) == order[0]  # 5 < ceil(1.25 x 17 / 4) = 6
    loads[order[0]].in_flight = 7
    assert pick_bounded(ring, key, loads, 1.25) == order[1]  # cap 6
    loads[order[1]].in_flight = 7
    assert pick_bounded(ring, key, loads, 1.25) == order[2]  # cap 7: the next in the fallback order


def test_an_idle_pool_sends_every_key_home() -> None:
    ring = make_strategy("ketama").build(["a", "b", "c"])
    loads = {name: Load() for name in ("a", "b", "c")}
    for key in map(str, range(200)):
        assert pick_bounded(ring, key, loads, 1.25) == ring.lookup(key)


@pytest.mark.slow
def test_zipf_traffic_busiest_replica_within_the_factor_and_cold_keys_stay(tmp_path: Path) -> None:
    # Replicas whose answer takes 20 ms of I/O, as real ones do: bounded loads caps in-flight requests, and
    # counts follow in-flight only while replicas are equally fast, which CPU-bound replicas on shared
    # cores are not (one starved of CPU holds its requests longer and sheds its keys to the others).
    command = [*echo_command(), "--home-delay", "0.02"]
    keys = zipf_keys(10_000, exponent=ZIPF_EXPONENT, universe=ZIPF_UNIVERSE)
    opts = PassOptions(concurrency=64, max_seconds=120.0)
    plain, bounded = a5.run(
        tmp_path, keys, opts, factor=1.25, settings={"replica_command": json.dumps(command)}
    )
    assert plain.failed == 0 and bounded.failed == 0
    assert plain.max_over_mean > 1.25  # the hot keys really overload one replica without the bound
    assert plain.cold_stay_share == 1.0
    assert bounded.max_over_mean <= 1.25, bounded.served
    # Cold replicas' keys mostly stay: they move only when overflow fills their replica to the cap.
    assert bounded.cold_stay_share >= 0.85, (bounded.cold_stayed, bounded.cold_home)
    hottest = max(bounded.home, key=bounded.home.__getitem__)
    assert bounded.served[hottest] < bounded.home[hottest]


@pytest.mark.slow
def test_a5_main_writes_csv_figure_and_its_report_section(tmp_path: Path) -> None:
    report = tmp_path / "REPORT.md"
    report.write_text("# Report\n\n## A-4: before\n\ntext\n")
    argv = ["--requests", "300", "--out", str(tmp_path / "a5"), "--report", str(report)]
    assert a5.main(argv) == 0
    assert (tmp_path / "a5" / "a5_bounded.csv").is_file()
    assert (tmp_path / "a5" / "a5_bounded.png").read_bytes()[:4] == b"\x89PNG"
    text = report.read_text()
    assert text.startswith("# Report\n\n## A-4: before\n\ntext\n") and text.count(a5.SECTION) == 1
    assert a5.main(argv) == 0  # a second run replaces the section
    assert report.read_text().count(a5.SECTION) == 1
