"""Bounded loads (LB_BALANCE_FACTOR): Zipf(1.1) traffic through real LBs, and the A-5 experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import a5
from experiments.a4 import ZIPF_EXPONENT, ZIPF_UNIVERSE
from experiments.common import PassOptions, zipf_keys
from tests.conftest import echo_command


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
    assert plain.failed == 0 and bounded.failed == 0, (plain.errors, bounded.errors)
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
