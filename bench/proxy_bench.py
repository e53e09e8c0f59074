"""`make bench`: the LB against nginx (`hash $arg_id consistent`) and a direct call, in one run.

Starts the LB (3 local replicas), points nginx at the same replicas, and loads each target with wrk
(same script, same connections). Prints and writes --out (bench/out/results.md; `make bench-report`:
the committed bench/results.md): req/s, p50/p99, and the ratios
LB/nginx and LB/direct. Absolute numbers are noisy on a shared 2-core machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/home?id=" .. math.random(100000, 999999))
end
"""
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream replicas {{
    hash $arg_id consistent;
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def to_ms(value: str) -> float:
    """wrk's latency text ("812.00us", "3.14ms", "1.02s", "1.50m") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    number, unit = match.groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(name: str, url: str, script: Path, connections: int, seconds: int) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk against {name} printed no latency distribution:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: a "+/- Stdev" column such as "62.50%" must not pass for the 50th percentile.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        print(f"warning: {name}: {out}", file=sys.stderr)
    return Result(name, rps, p50, p99)


def start_lb(port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(LB_HOST="127.0.0.1", LB_PORT=str(port), LB_REPLICAS="3", LB_LOG_LEVEL="warning")
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    # The committed bench/results.md changes only when named (`make bench-report`).
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "results.md")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} is not installed (make bench installs it)")
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"

    tmp = Path(tempfile.mkdtemp(prefix="chlb-bench-"))
    script = tmp / "keys.lua"
    script.write_text(WRK_SCRIPT)
    lb_port, nginx_port = free_port(), free_port()
    lb = start_lb(lb_port)
    nginx: subprocess.Popen[bytes] | None = None
    try:
        wait_http(f"http://127.0.0.1:{lb_port}/rep")
        rows = httpx.get(f"http://127.0.0.1:{lb_port}/status").json()["replicas"]
        addresses = [row["address"] for row in rows]
        servers = "\n".join(f"    server {addr};" for addr in addresses)
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, servers=servers, port=nginx_port))
        nginx = subprocess.Popen([nginx_bin, "-c", str(conf), "-p", str(tmp)])
        wait_http(f"http://127.0.0.1:{nginx_port}/home?id=1")

        targets = {
            "direct (one replica, no proxy)": f"http://{addresses[0]}",
            "nginx 1 worker, hash $arg_id consistent": f"http://127.0.0.1:{nginx_port}",
            "this LB (1 process)": f"http://127.0.0.1:{lb_port}",
        }
        samples: dict[str, list[Result]] = {name: [] for name in targets}
        for _ in range(args.passes):
            for name, url in targets.items():
                run_wrk(name, url, script, args.connections, 2)  # warm-up: pools, caches
                samples[name].append(run_wrk(name, url, script, args.connections, args.seconds))
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        lb.send_signal(signal.SIGTERM)
        lb.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)

    results = {
        name: Result(
            name,
            sum(r.rps for r in rs) / len(rs),
            sum(r.p50_ms for r in rs) / len(rs),
            sum(r.p99_ms for r in rs) / len(rs),
        )
        for name, rs in samples.items()
    }
    direct, nginx_r, ours = results.values()
    lines = [
        f"# Proxy benchmark: wrk -t1 -c{args.connections} -d{args.seconds}s, GET /home?id=<random>, "
        f"mean of {args.passes} passes",
        "",
        "| target | req/s | p50 ms | p99 ms | × nginx | × direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.rps / nginx_r.rps:.2f} | {r.rps / direct.rps:.2f} |"
        )
    lines += [
        "",
        f"LB/nginx req/s = **{ours.rps / nginx_r.rps:.2f}**, LB p99 / nginx p99 = "
        f"**{ours.p99_ms / nginx_r.p99_ms:.2f}**, LB/direct = {ours.rps / direct.rps:.2f}.",
        "",
        "Per pass (req/s): "
        + "; ".join(f"{n}: " + " / ".join(f"{r.rps:,.0f}" for r in rs) for n, rs in samples.items()),
        "",
        "Machine: 2 shared cores; wrk, the proxy and the 3 replicas all run on them. Compare ratios only.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
