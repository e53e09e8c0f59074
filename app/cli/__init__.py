"""`chlb`: a command line for a running load balancer (talks to it over HTTP only)."""

from __future__ import annotations

from app.cli.commands import main

__all__ = ["main"]
