"""What every nginx of the benchmark shares: one process tree per folder, no access log, temp paths there."""

from __future__ import annotations

from pathlib import Path

_MAIN = """
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log {error_level};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
{http}
}}
"""


def nginx_conf(tmp: Path, http: str, *, workers: int = 1, error_level: str = "warn") -> str:
    """A whole nginx.conf whose `http` block holds `http` (upstreams, servers)."""
    return _MAIN.format(tmp=tmp, workers=workers, error_level=error_level, http=http)
