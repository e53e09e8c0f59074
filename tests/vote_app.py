"""The voting tests run against the real LB app (built by app.launch), no replicas and a fresh database.

TestClient reaches the LB's own paths through ASGI, as the data plane's protocol hands them over.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.launch import build
from app.settings import Settings

__all__ = ["TestClient", "make_app", "make_settings"]


def make_settings(tmp_path: Path) -> Settings:
    """A fresh database under tmp_path, no replicas; `_env_file=None` keeps a developer's .env out."""
    return Settings(db_path=tmp_path / "data" / "votes.sqlite3", replicas=0, _env_file=None)


def make_app(settings: Settings) -> FastAPI:
    """The LB's app with its data plane's front attached (an app without one refuses to start)."""
    return build(settings)[0]
