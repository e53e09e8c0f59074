"""`python -m app` with bad settings: a clear message per setting and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.lb_support import ROOT


def test_invalid_settings_are_reported_plainly() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_PORT="abc", LB_STRATEGY="fastest", LB_REPLICAS="-1")
    done = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    for name in ("LB_PORT='abc'", "LB_STRATEGY='fastest'", "LB_REPLICAS='-1'"):
        assert f"invalid setting {name}" in done.stderr, done.stderr
