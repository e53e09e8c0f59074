"""Compile the hot path (app.native.MODULES) with mypyc into build/native, unless it is up to date.

Run by `make native`. The build goes to a temporary folder and replaces build/native only once it has
succeeded, so a failed build leaves the Python source in use (app/native.py checks the manifest), never
half a build. Exit status 0 even then: the LB runs interpreted, only slower, and says so at start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["LB_COMPILED"] = "false"  # import app.native without loading a previous build

from app import native  # noqa: E402  (needs the path and the variable above)


def snapshot(target: Path) -> dict[str, str]:
    """Copy the sources into `target` (what is compiled) and return each module's sha256 there.

    An edit made while mypyc runs (minutes on a busy machine) must not end in a build whose manifest
    describes other bytes than it compiled: the build reads the copy, the manifest hashes the copy.
    """
    shutil.copytree(ROOT / "app", target / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")  # mypy's configuration
    digests = {}
    for name in native.MODULES:
        source = target / native.source_path(name).relative_to(ROOT)
        digests[name] = hashlib.sha256(source.read_bytes()).hexdigest()
    return digests


def build(target: Path) -> dict[str, str]:
    """Compile the sources in the working directory into `target`; return each extension module's file,
    relative to `target`."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    paths = [str(native.source_path(name).relative_to(ROOT)) for name in native.MODULES]
    extensions = mypycify(paths, group_name=native.GROUP, target_dir=str(target / "c"), opt_level="3")
    dist = Distribution({"name": "chlb-native", "ext_modules": extensions})
    dist.script_name = "build_native"
    dist.script_args = ["-q", "build_ext", "--build-lib", str(target), "--build-temp", str(target / "o")]
    dist.parse_command_line()
    dist.run_commands()
    command = dist.get_command_obj("build_ext")
    files = {ext.name: command.get_ext_fullpath(ext.name) for ext in extensions}
    files = {name: str(Path(path).resolve().relative_to(target.resolve())) for name, path in files.items()}
    shutil.rmtree(target / "c")
    shutil.rmtree(target / "o")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-dir", type=Path, default=native.BUILD_DIR, help="default: the LB's")
    build_dir: Path = parser.parse_args(argv).build_dir.resolve()
    files, reason = native.check(build_dir)
    if files:
        print(f"build_native: up to date ({build_dir})")
        return 0
    print(f"build_native: compiling {len(native.MODULES)} modules with mypyc ({reason})", flush=True)
    started = time.monotonic()
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="native-", dir=build_dir.parent))
    sources = staging / "src"
    try:
        digests = snapshot(sources)
        os.chdir(sources)  # mypyc names modules after their paths
        native.write_manifest(staging, build(staging), digests)
        shutil.rmtree(sources)
    except Exception as exc:  # a missing compiler or header: run interpreted, say so
        shutil.rmtree(staging, ignore_errors=True)
        print(f"build_native: FAILED, the LB will run the Python source: {exc!r}", file=sys.stderr)
        return 0
    finally:
        os.chdir(ROOT)
    shutil.rmtree(build_dir, ignore_errors=True)
    staging.rename(build_dir)
    print(f"build_native: done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
