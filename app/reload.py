"""Change it live: re-read every setting, apply the live ones at once to this process and its workers.

nginx and HAProxy reload by starting new processes beside the old ones; here the processes stay and swap
what their connections read: the client limits, the data plane's knobs, the pools' timeouts, the ring.
Nothing is closed, so no connection or request is lost. Settings that shape the processes themselves
(ports, workers, runtime, stores) are reported as needing a restart and keep their running values.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, fields
from typing import Any

from fastapi import FastAPI

from app.control.local_membership import MembershipPolicy
from app.dataplane.edge import load_certificates
from app.dataplane.front import Front, FrontLimits
from app.dataplane.tls import CertificateError, Certificates
from app.ring import introspect
from app.ring.base import Ring
from app.ring.registry import make_strategy
from app.settings import BadSettingsError, Settings, read_settings

logger = logging.getLogger(__name__)

# What a reload changes at once; every other setting needs a restart.
CLIENT_SIDE = frozenset(f.name for f in fields(FrontLimits))
DATA_PLANE = frozenset({"max_tries", "balance_factor", "key_source", "key_name", "access_log", "log_level"})
UPSTREAM = frozenset({"connect_timeout", "read_timeout", "max_idle_connections"})
HEALTH = frozenset(
    {
        "heartbeat_interval",
        "heartbeat_timeout",
        "heartbeat_jitter",
        "rise",
        "fall",
        "start_timeout",
        "restart_backoff_max",
        "drain_timeout",
        "replacement_name",
        "max_replicas",
    }
)
RING = frozenset({"strategy", "vnodes"})
ADMIN = frozenset({"admin_token", "admin_token_file", "config_file"})
CERTIFICATES = frozenset({"tls_cert", "tls_key", "tls_certs_dir"})  # re-read on every reload anyway
LIVE = CLIENT_SIDE | DATA_PLANE | UPSTREAM | HEALTH | RING | ADMIN | CERTIFICATES
SECRETS = frozenset({"admin_token", "votes_url", "votes_password"})  # GET /config says set or unset only


@dataclass(frozen=True)
class Reloaded:
    """What a reload did."""

    applied: list[str]  # live settings whose value changed, now in force everywhere
    restart_needed: list[str]  # changed settings that keep their running value until a restart
    moved_share: float | None  # the strategy changed: the share of the sample's keys that moved
    loaded_at: float
    message: str  # the one log line


def changes(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """The changed settings that apply live, and those that need a restart (names, in field order)."""
    changed = [name for name in Settings.model_fields if getattr(old, name) != getattr(new, name)]
    return [n for n in changed if n in LIVE], [n for n in changed if n not in LIVE]


def in_force(old: Settings, new: Settings, applied: list[str]) -> Settings:
    """The running settings after a reload: the new value of each applied setting, the old of the rest."""
    settings = old.model_copy(update={name: getattr(new, name) for name in applied})
    settings._origins = {**old._origins, **{n: new._origins[n] for n in applied if n in new._origins}}
    for name in applied:
        if name not in new._origins:
            settings._origins.pop(name, None)  # back to its default
    return settings


def moved_share(before: Ring, after: Ring) -> float:
    """The share of the fixed key sample whose replica differs between two rings."""
    keys = introspect.sample_keys()
    pairs = zip(introspect.assign(before, keys), introspect.assign(after, keys), strict=True)
    return sum(old != new for old, new in pairs) / len(keys)


class Reloader:
    """The owner process's reload: validate everything first, then apply here and push to the workers."""

    def __init__(self, app: FastAPI, front: Front) -> None:
        self.app = app
        self.front = front
        self.loaded_at = time.time()
        self.restart_needed: list[str] = []  # changed on disk, waiting for a restart
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def reload(self, trigger: str) -> Reloaded:
        """Re-read the environment, .env and LB_CONFIG_FILE; BadSettingsError (nothing changed) if any
        value is bad."""
        async with self._lock:  # two reloads at once would interleave their swaps
            new = read_settings()
            state = self.app.state
            old: Settings = state.settings
            applied, restart_needed = changes(old, new)
            settings = in_force(old, new, applied)
            tls = getattr(state, "tls", None)  # the HTTPS listener: its certificates are read again
            certificates = self._certificates(settings) if tls is not None else None
            moved = None
            if RING & set(applied):
                moved = await self._use_strategy(settings)
            state.membership.retune(MembershipPolicy.from_settings(settings))  # its pools too
            self.front.reconfigure(settings)
            if tls is not None and certificates is not None:
                tls.use(certificates)  # new connections get them; open ones keep theirs
            state.settings = settings
            hub = getattr(state, "hub", None)
            if hub is not None:
                hub.send_settings(settings)
            self.loaded_at = time.time()
            self.restart_needed = restart_needed
            message = describe(trigger, applied, restart_needed, moved)
            logger.info("%s", message)
            return Reloaded(applied, restart_needed, moved, self.loaded_at, message)

    @staticmethod
    def _certificates(settings: Settings) -> Certificates | None:
        try:
            return load_certificates(settings)
        except CertificateError as exc:
            raise BadSettingsError([str(exc)]) from None

    async def _use_strategy(self, settings: Settings) -> float:
        membership = self.app.state.membership
        strategy = make_strategy(settings.strategy, settings.vnodes)
        before = membership.table.ring
        try:
            await membership.use_strategy(strategy)
        except ValueError as exc:
            problem = f"strategy {settings.strategy} cannot hold the replicas: {exc}"
            raise BadSettingsError([problem]) from None
        self.app.state.strategy = strategy
        # 20,000 lookups: off the event loop that proxies (as /ring/plan's sample runs in the threadpool).
        return await asyncio.to_thread(moved_share, before, membership.table.ring)

    live = LIVE

    def view(self, settings: Settings) -> dict[str, Any]:
        """Every setting as JSON, secrets redacted (GET /config)."""
        return settings_view(settings)

    def on_signal(self) -> None:
        """SIGHUP: reload; a bad file is one log line and changes nothing."""
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload("SIGHUP")
        except BadSettingsError as exc:
            logger.error("reload on SIGHUP refused, nothing changed: %s", "; ".join(exc.problems))

    def listen(self) -> None:
        """Reload on SIGHUP from now on (as nginx and HAProxy do) instead of dying of it."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_signal)


def describe(trigger: str, applied: list[str], restart_needed: list[str], moved: float | None) -> str:
    """The reload's one log line."""
    parts = [f"configuration reloaded ({trigger})"]
    parts.append(f"applied: {', '.join(applied)}" if applied else "no live setting changed")
    if moved is not None:
        parts.append(f"{moved:.1%} of the sampled keys moved to another replica")
    if restart_needed:
        parts.append(f"need a restart to take effect (running values kept): {', '.join(restart_needed)}")
    return "; ".join(parts)


def settings_view(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON, secrets redacted (whether one is set is shown, never its value)."""
    view: dict[str, Any] = {}
    for name, value in settings.model_dump(mode="json").items():
        if name in SECRETS:
            view[name] = None if getattr(settings, name) is None else "**********"
        else:
            view[name] = value
    return view

