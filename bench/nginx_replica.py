"""A near-free replica for the benchmark: nginx answering the replica contract on the LB's socket.

The LB starts it as LB_REPLICA_COMMAND (`python -m bench.nginx_replica --fd {fd} --port {port}`), so it
runs under the LB's own lifecycle. nginx inherits the bound socket through its NGINX environment
variable (the mechanism of its binary upgrade) and serves /home and /heartbeat at nginx's cost, so
that a proxy in front of it pays for itself only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.nginx_conf import nginx_conf

SERVER = """
  keepalive_requests 1000000;
  server {{
    listen {host}:{port} backlog=1024;
    location = /home {{ default_type application/json; return 200 '{body}'; }}
    location = /heartbeat {{ return 200; }}
    location / {{ return 404; }}
  }}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    name = os.environ.get("SERVER_ID", "unknown")
    body = json.dumps({"message": f"Hello from Server: {name}", "status": "successful"})
    # nginx replaces this process, so nothing here can remove the folder: it goes in TMPDIR, which the
    # benchmark points at a folder of its own that it removes at the end.
    tmp = Path(tempfile.mkdtemp(prefix="chlb-nginx-replica-"))
    conf = tmp / "nginx.conf"
    server = SERVER.format(host=args.host, port=args.port, body=body.replace("'", "\\'"))
    conf.write_text(nginx_conf(tmp, server, error_level="error"))
    os.set_inheritable(args.fd, True)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    env = {**os.environ, "NGINX": f"{args.fd};"}
    os.execve(nginx, [nginx, "-c", str(conf), "-p", str(tmp)], env)
    return 1  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
