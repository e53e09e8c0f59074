"""What a newcomer meets first: the README's links and commands on a fresh copy, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.lb_support import ROOT, LBFactory, child_pids
from tests.polling import wait_until
from tests.ports import free_port

MAKE_ENV_NOISE = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")  # set when the suite runs under make
LINK = re.compile(r"\]\(([^)\s]+)\)")
DOCS = sorted(str(page.relative_to(ROOT)) for page in (ROOT / "docs").glob("*.md"))  # the README links them


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_") and k not in MAKE_ENV_NOISE}
    env.update(extra)
    return env


def run(
    *argv: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = clean_env(**(env or {}))
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed repository, cloned as a newcomer would get it (no .venv, no ignored files)."""
    copy = tmp_path_factory.mktemp("fresh") / "chlb"
    done = run("git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(copy), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return copy


@pytest.mark.parametrize("document", ["README.md", *DOCS])
def test_links_point_to_files_in_the_repository(fresh_copy: Path, document: str) -> None:
    text = (fresh_copy / document).read_text()
    targets = [t for t in LINK.findall(text) if not t.startswith(("http://", "https://", "#"))]
    assert document != "README.md" or "docs/contract.md" in targets
    for target in targets:
        path = (fresh_copy / document).parent / target.split("#")[0]
        assert path.resolve().is_relative_to(fresh_copy), f"{document} links outside the repository: {target}"
        assert path.exists(), f"{document} links to a missing file: {target}"
    assert "../shared" not in text


def test_make_help_lists_every_target_and_the_readme_names_only_real_ones(fresh_copy: Path) -> None:
    done = run("make", "help", cwd=fresh_copy)
    assert done.returncode == 0, done.stderr
    listed = set(re.findall(r"^make ([\w-]+)", done.stdout, re.MULTILINE))
    makefiles = (fresh_copy / "Makefile").read_text() + (fresh_copy / "mk" / "docker.mk").read_text()
    phony = {t for line in re.findall(r"^\.PHONY:(.*)$", makefiles, re.MULTILINE) for t in line.split()}
    assert phony - {"help"} <= listed, f"make help omits {phony - {'help'} - listed}"
    in_readme = set(re.findall(r"`(?:[A-Z_]+=\S+ )*make ([\w-]+)", (fresh_copy / "README.md").read_text()))
    assert in_readme <= listed | {"help"}, f"README names targets not in make help: {in_readme - listed}"
    assert {"docker-images", "bench-report", "experiments-report"} <= listed


def test_bench_and_experiments_write_to_ignored_folders_by_default(fresh_copy: Path) -> None:
    from bench import proxy_bench
    from experiments import run_all

    outputs = {
        "bench/out/results.md": "bench/results.md",
        "experiments/results/REPORT.md": "experiments/REPORT.md",
        "experiments/results/figures/a1.png": "experiments/figures/a1_requests_per_replica.png",
    }
    ignored = run("git", "check-ignore", *outputs, cwd=fresh_copy)
    assert ignored.stdout.split() == list(outputs), ignored.stderr
    tracked = run("git", "ls-files", "--error-unmatch", *outputs.values(), cwd=fresh_copy)
    assert tracked.returncode == 0, tracked.stderr  # committed: only the *-report targets write them
    args = run_all.build_parser().parse_args([])
    results = ROOT / "experiments" / "results"
    assert (args.report, args.figures) == (results / "REPORT.md", results / "figures")
    for target, committed, out in (
        ("experiments", "experiments/REPORT.md", "--out experiments/results"),
        ("bench", "bench/results.md", "--out bench/out/results.md"),
    ):
        stamps = ("-o", ".venv/.installed-stamp", "-o", ".venv/.run-stamp")  # counted as up to date
        dry = run("make", "-n", *stamps, target, cwd=fresh_copy)
        assert dry.returncode == 0 and committed not in dry.stdout, dry.stdout + dry.stderr
        assert out in dry.stdout
    assert proxy_bench.__doc__ and "bench/out/results.md" in proxy_bench.__doc__


def test_a_first_make_run_installs_only_what_running_needs_and_compiles_nothing(fresh_copy: Path) -> None:
    """A fresh clone answers within seconds of its install: no dev or experiments extras, no mypyc build
    (make native is its own step; the LB runs the Python source until one exists)."""
    dry = run("make", "-n", "run", cwd=fresh_copy)
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs == [".venv/bin/pip install -q --no-compile -e ."], dry.stdout
    assert "build_native" not in dry.stdout and "apt-install" not in dry.stdout, dry.stdout
    assert dry.stdout.splitlines()[-1] == "exec .venv/bin/python -m app"


def test_build_base_image_help_prints_usage(fresh_copy: Path) -> None:
    done = run(str(fresh_copy / "scripts" / "build-base-image.sh"), "--help", cwd=fresh_copy)
    assert done.returncode == 0, done.stderr
    assert "Usage: scripts/build-base-image.sh" in done.stdout and "--pick" in done.stdout


def test_compose_plugin_is_linked_inside_the_project_and_make_clean_removes_it(
    fresh_copy: Path, tmp_path: Path
) -> None:
    """docker-engine.sh where an engine answers but has no compose plugin: ~/.docker stays untouched."""
    fake_bin, home = tmp_path / "bin", tmp_path / "home"
    fake_bin.mkdir()
    home.mkdir()
    # A stand-in for the docker CLI (not one of our servers): `info` answers, `compose` exists only as a
    # plugin in $DOCKER_CONFIG/cli-plugins, as with the real CLI.
    (fake_bin / "docker").write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  info) exit 0 ;;\n"
        '  compose) [ -x "$DOCKER_CONFIG/cli-plugins/docker-compose" ] || exit 1; echo 2.0; exit 0 ;;\n'
        "esac\nexit 1\n"
    )
    (fake_bin / "docker").chmod(0o755)
    env = {"HOME": str(home), "PATH": f"{fake_bin}:{os.environ['PATH']}", "COMPOSE_PY": sys.executable}
    done = run(str(fresh_copy / "scripts" / "docker-engine.sh"), cwd=fresh_copy, env=env)
    assert done.returncode == 0, done.stderr
    plugin = fresh_copy / ".docker" / "cli-plugins" / "docker-compose"
    assert plugin.is_symlink() and os.access(plugin, os.X_OK), done.stderr
    assert list(home.iterdir()) == [], "the script wrote into the home directory"
    assert run("git", "status", "--porcelain", cwd=fresh_copy).stdout == ""  # .docker/ is ignored
    cleaned = run("make", "clean", cwd=fresh_copy, env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (fresh_copy / ".docker").exists()
    assert list(home.iterdir()) == []


def test_docs_pages_load_nothing_from_other_hosts(lb_factory: LBFactory) -> None:
    lb = lb_factory(replicas="0")
    for page in ("/docs", "/redoc"):
        html = lb.client.get(page).text
        assert re.findall(r"https?://[^\"'\s)]+", html) == [], page
        assert "/docs-assets/" in html


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_make_run_stops_cleanly(tmp_path: Path, stop: str) -> None:
    """Ctrl-C signals the whole process group (make and the LB); a service manager SIGTERMs the LB."""
    port = free_port()
    db = str(tmp_path / "v.db")
    env = clean_env(LB_HOST="127.0.0.1", LB_PORT=str(port), LB_REPLICAS="1", LB_DB_PATH=db)
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        # -o: the stamp counts as up to date, so make only runs the LB (it never reinstalls the venv here).
        make = subprocess.Popen(
            ["make", "--no-print-directory", "-o", ".venv/.run-stamp", "run"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def serving() -> bool:
            assert make.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/rep", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, timeout=60, interval=0.05)
        if stop == "ctrl-c":
            os.killpg(make.pid, signal.SIGINT)
            # GNU make re-raises a SIGINT it got itself once its child is done: 130 in a shell, no message.
            expected = {0, -signal.SIGINT}
        else:
            (lb_pid,) = child_pids(make.pid)  # make execs the LB: its only child
            os.kill(lb_pid, signal.SIGTERM)
            expected = {0}
        assert make.wait(30) in expected, log.read_text()
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    text = log.read_text()
    assert "make: ***" not in text and "Traceback" not in text, text
    assert text.rstrip().endswith(("stopped by SIGINT", "stopped by SIGTERM")), text
