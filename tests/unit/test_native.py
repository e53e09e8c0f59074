"""The compiled hot path is used only while its build matches the sources, and never in part."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from app import native
from app.errors import NoReplicasError
from app.metrics import Stats
from app.ring import STRATEGIES


def fake_build(tmp_path: Path, **overrides: object) -> Path:
    """A build folder whose manifest matches the sources (empty files stand in for extensions)."""
    files = {name: f"{name.replace('.', '/')}.so" for name in (*native.MODULES, native.GROUP + "__mypyc")}
    for file in files.values():
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes(b"")
    native.write_manifest(tmp_path, files, {name: native.source_digest(name) for name in native.MODULES})
    manifest = json.loads((tmp_path / native.MANIFEST).read_text())
    manifest.update(overrides)
    (tmp_path / native.MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_a_build_that_matches_the_sources_is_used(tmp_path: Path) -> None:
    files, reason = native.check(fake_build(tmp_path))
    assert reason == ""
    assert set(files) == {*native.MODULES, native.GROUP + "__mypyc"}
    assert files["app.dataplane.server"] == tmp_path / "app/dataplane/server.so"


def test_no_build_means_the_python_source(tmp_path: Path) -> None:
    assert native.check(tmp_path) == ({}, native.NOT_BUILT)


def test_a_changed_source_makes_the_whole_build_unused(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    manifest = json.loads((build / native.MANIFEST).read_text())
    manifest["modules"]["app.dataplane.exchange"]["sha256"] = "0" * 64
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    files, reason = native.check(build)
    assert files == {}
    assert reason == "stale: app.dataplane.exchange changed since the build (make native)"


def test_a_build_for_another_interpreter_is_not_used(tmp_path: Path) -> None:
    files, reason = native.check(fake_build(tmp_path, cache_tag="cpython-399"))
    assert files == {}
    assert reason.startswith("built for cpython-399")


def test_a_build_of_another_module_list_is_not_used(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    manifest = json.loads((build / native.MANIFEST).read_text())
    del manifest["modules"]["app.metrics"]
    (build / native.MANIFEST).write_text(json.dumps(manifest))
    assert native.check(build) == ({}, "built from another module list (make native)")


def test_a_missing_extension_file_is_named(tmp_path: Path) -> None:
    build = fake_build(tmp_path)
    (build / "app/metrics.so").unlink()
    files, reason = native.check(build)
    assert files == {}
    assert reason == f"missing {build / 'app/metrics.so'}"


def test_a_corrupt_manifest_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / native.MANIFEST).write_text("{not json")
    files, reason = native.check(tmp_path)
    assert files == {}
    assert reason.startswith(f"unreadable manifest in {tmp_path}")


def imported_files(compiled: str) -> dict[str, object]:
    """Where a fresh interpreter loads the hot path from, and what app.native says about it."""
    code = (
        "import json, app.native as n, app.dataplane.server as s, app.ring.maglev as m;"
        "print(json.dumps({'server': s.__file__, 'maglev': m.__file__, 'compiled': n.STATE.compiled,"
        " 'reason': n.STATE.reason}))"
    )
    env = {**os.environ, "LB_COMPILED": compiled}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_build_is_loaded_and_lb_compiled_false_turns_it_off() -> None:
    files, reason = native.check(native.BUILD_DIR)
    source = {
        "server": str(native.source_path("app.dataplane.server")),
        "maglev": str(native.source_path("app.ring.maglev")),
    }
    compiled = imported_files("true")
    if files:  # make test built it (a C compiler was at hand)
        assert compiled["compiled"] is True
        assert str(compiled["server"]).startswith(str(native.BUILD_DIR))
        assert str(compiled["maglev"]).startswith(str(native.BUILD_DIR))
    else:  # no usable build: the source runs, and says why
        assert compiled == {**source, "compiled": False, "reason": reason}
    assert imported_files("false") == {**source, "compiled": False, "reason": "LB_COMPILED=false"}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_rings_reach_the_workers_intact(strategy: str) -> None:
    # Workers get the ring pickled; compiled classes pickle only through their __reduce__.
    ring = STRATEGIES[strategy]().build(["Server 1", "Server 2", "Server 3"])
    copy = pickle.loads(pickle.dumps(ring))
    assert type(copy) is type(ring)
    assert [copy.lookup(str(k)) for k in range(300)] == [ring.lookup(str(k)) for k in range(300)]
    empty = pickle.loads(pickle.dumps(STRATEGIES[strategy]().build([])))
    with pytest.raises(NoReplicasError):
        empty.lookup("1")


def test_counters_reach_the_owner_intact() -> None:
    stats = Stats()
    stats.replica("Server 1").observe(200, 0.004)
    stats.replica("Server 1").errors += 2
    stats.replied(503)
    stats.transition("Server 1", "down")
    stats.in_flight = {"Server 1": 2}
    copy = pickle.loads(pickle.dumps(stats))
    assert copy.replica("Server 1").requests == 3
    assert copy.replica("Server 1").latency_p99() == 0.004
    assert copy.lb_responses == {503: 1}
    assert copy.transitions == {("Server 1", "down"): 1}
    assert copy.in_flight == {"Server 1": 2}
    copy.replica("Server 1").observe(500, 0.1)  # the copy keeps counting
    assert copy.replica("Server 1").by_class[5] == 1


def test_without_a_working_compiler_the_build_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    build_dir = tmp_path / "native"
    script = native.ROOT / "scripts" / "build_native.py"
    env = {**os.environ, "CC": "false"}  # a compiler that fails every file, as a missing one would
    done = subprocess.run(
        [sys.executable, str(script), "--build-dir", str(build_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # make goes on: the LB runs interpreted
    assert "build_native: FAILED, the LB will run the Python source" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no half build: the staging folder is gone too
    assert native.check(build_dir) == ({}, native.NOT_BUILT)
