"""The LB image's health check: ready once, then alive (Dockerfile.lb's HEALTHCHECK runs it).

Until /readyz has answered 200 once (every replica on the ring), the container is not healthy: compose
and Swarm, and `make docker-up` / `make swarm-up`, wait for routable LBs. After that it checks /healthz
only: Swarm replaces an unhealthy task, and a replica that dies later must not get the LB restarted.
The mark is a file in the container, so a new container starts unready again.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

MARK = Path(os.environ.get("LB_HEALTHCHECK_MARK", "/tmp/chlb-ready"))


def answers(path: str) -> bool:
    url = f"http://127.0.0.1:{os.environ.get('LB_PORT', '5000')}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return False


def main() -> int:
    if MARK.exists():
        return 0 if answers("/healthz") else 1
    if not answers("/readyz"):
        return 1
    MARK.touch()
    return 0


if __name__ == "__main__":
    sys.exit(main())
