"""The hot path compiled with mypyc, used only while it matches the Python source it was built from.

`make native` (run by `make run`, `make test`, `make bench`) compiles MODULES to C extensions in
build/native and writes a manifest with each source's sha256. `install()` runs when the `app` package is
imported, before any of these modules is: if the manifest matches the sources, this interpreter and
LB_COMPILED, a finder at the front of sys.meta_path loads every listed module from build/native;
otherwise nothing is, and the Python source runs as it is. All or none: compiled modules reach into each
other's native classes, so a mix of compiled and interpreted copies of the group would not work.
The build directory, not the source tree, holds the extensions: an edited .py never runs a stale .so.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "native"
MANIFEST = "manifest.json"
# The shared library that holds the compiled group (mypyc adds "__mypyc").
GROUP = "app._native"

# Per proxied request: the client and upstream protocols (HTTP/1.1 and HTTP/2), the exchange, key
# extraction, the ring lookup, per-replica counters. (Pure modules with no Python base classes: native
# classes.)
MODULES = (
    "app.dataplane.server",
    "app.dataplane.exchange",
    "app.dataplane.retry",
    "app.dataplane.seams",
    "app.dataplane.http1",
    "app.dataplane.http2",
    "app.dataplane.h2codec",
    "app.dataplane.hpack",
    "app.upstream.connection",
    "app.upstream.pool",
    "app.upstream.headers",
    "app.dataplane.keys",
    "app.dataplane.balance",
    "app.metrics",
    "app.ring.base",
    "app.ring.hashing",
    "app.ring.rendezvous",
    "app.ring.ketama",
    "app.ring.maglev",
    "app.ring.slots",
    "app.ring.slot_strategies",
)

_FALSE = {"0", "false", "no", "off"}


NOT_BUILT = "no compiled build yet; `make native` compiles one (faster)"  # a first run: said, not warned


@dataclass(frozen=True)
class NativeState:
    """Whether the compiled modules are in use, and why not when they are not."""

    compiled: bool
    reason: str
    chosen: bool = False  # interpreted because LB_COMPILED=false said so (not a missing or stale build)

    def log(self, log: logging.Logger) -> None:
        """One start-up line: a warning when a build was wanted and cannot be used."""
        if self.compiled:
            log.info("hot path compiled with mypyc (%d modules from %s)", len(MODULES), BUILD_DIR)
        else:
            expected = self.chosen or self.reason == NOT_BUILT
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "hot path runs as Python source: %s", self.reason)


STATE = NativeState(False, "not checked yet")


def source_path(module: str) -> Path:
    """The .py file of one of MODULES."""
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def source_digest(module: str) -> str:
    """sha256 of a module's source, as recorded in the manifest."""
    return hashlib.sha256(source_path(module).read_bytes()).hexdigest()


def write_manifest(build_dir: Path, extensions: dict[str, str], digests: dict[str, str]) -> None:
    """Record what was built: each module's extension file (relative to build_dir) and the sha256 of the
    source it was compiled from."""
    manifest = {
        "cache_tag": sys.implementation.cache_tag,
        "modules": {name: {"file": extensions[name], "sha256": digests[name]} for name in MODULES},
        "group": {GROUP + "__mypyc": extensions[GROUP + "__mypyc"]},
    }
    (build_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def check(build_dir: Path) -> tuple[dict[str, Path], str]:
    """The extension file per module name if the build matches the sources, else ({}, why not)."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except FileNotFoundError:
        return {}, NOT_BUILT
    except (OSError, ValueError) as exc:
        return {}, f"unreadable manifest in {build_dir}: {exc}"
    if manifest.get("cache_tag") != sys.implementation.cache_tag:
        return {}, f"built for {manifest.get('cache_tag')}, this is {sys.implementation.cache_tag}"
    modules = manifest.get("modules", {})
    if set(modules) != set(MODULES):
        return {}, "built from another module list (make native)"
    stale = [name for name in MODULES if modules[name].get("sha256") != source_digest(name)]
    if stale:
        return {}, f"stale: {', '.join(stale)} changed since the build (make native)"
    files = {name: build_dir / entry["file"] for name, entry in modules.items()}
    files.update({name: build_dir / file for name, file in manifest.get("group", {}).items()})
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        return {}, f"missing {', '.join(missing)}"
    return files, ""


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Loads exactly the manifest's modules from their extension files."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for a compiled module; None lets the normal finders handle everything else."""
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install(build_dir: Path = BUILD_DIR) -> NativeState:
    """Put the compiled modules first if they match the sources (called once, from app/__init__.py)."""
    global STATE
    if os.environ.get("LB_COMPILED", "true").strip().lower() in _FALSE:
        STATE = NativeState(False, "LB_COMPILED=false", chosen=True)
        return STATE
    loaded = [name for name in MODULES if name in sys.modules]
    if loaded:
        STATE = NativeState(False, f"imported before the check: {', '.join(loaded)}")
        return STATE
    files, reason = check(build_dir)
    if files:
        sys.meta_path.insert(0, CompiledFinder(files))
    STATE = NativeState(bool(files), reason)
    return STATE
