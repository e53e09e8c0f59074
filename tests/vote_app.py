"""The voting tests run against the real LB app (create_app) with no replicas and a fresh database."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app as make_app
from app.settings import Settings

__all__ = ["TestClient", "make_app", "make_settings"]


def make_settings(tmp_path: Path) -> Settings:
    """A fresh database under tmp_path, no replicas; `_env_file=None` keeps a developer's .env out."""
    return Settings(db_path=tmp_path / "data" / "votes.sqlite3", replicas=0, _env_file=None)
