"""A throw-away PostgreSQL for tests: a cluster of our own on a free loopback port, stopped at the end.

`postgres` (session): one cluster for the session; `postgres_db` gives each test a fresh database in it.
A test that stops the server (an outage) makes a cluster of its own with `PgCluster.create()`.
Run as root, the server runs as the `postgres` user (root cannot run it). The only skip: no PostgreSQL
binaries here (Debian: apt-get install postgresql; `make test` installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

USER = "chlb"
START_TRIES = 3  # a free port taken by someone else between choosing and binding: pick another


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgCluster:
    """One data folder and its server on 127.0.0.1:port (trust authentication, user `chlb`)."""

    bin: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def create(cls) -> PgCluster:
        """initdb and start a new cluster under /tmp (skips the test when PostgreSQL is not installed).

        Not under pytest's tmp_path: that is private to root, and the server runs as `postgres`.
        """
        bin_dir = pg_bin()
        if bin_dir is None:
            pytest.skip("no PostgreSQL binaries (initdb) here: apt-get install postgresql")
        root = Path(tempfile.mkdtemp(prefix="chlb-pg-"))
        root.chmod(0o755)
        cluster = cls(bin_dir, root, 0)
        cluster._as_server_user([str(bin_dir / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", USER])
        for attempt in range(START_TRIES):
            cluster.port = free_port()
            try:
                cluster.start()
                return cluster
            except subprocess.CalledProcessError:
                if attempt == START_TRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def start(self) -> None:
        """Start the server (again) on its port; returns once it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._as_server_user(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
             "-w", "-t", "30", "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` disconnects clients and shuts down cleanly, `immediate` is a crash."""
        self._as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop"])

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement with psql; its unaligned output."""
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database, "-XAtq",
             "-v", "ON_ERROR_STOP=1", "-c", statement],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def _as_server_user(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            server_user = pwd.getpwnam("postgres")
            os.chown(self.root, server_user.pw_uid, server_user.pw_gid)
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr[-2000:])


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgCluster]:
    """One throw-away PostgreSQL cluster for the session."""
    cluster = PgCluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres: PgCluster) -> str:
    """The URL of a new, empty database in the session's cluster."""
    return postgres.url(postgres.create_database())
