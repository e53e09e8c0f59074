"""`make bench`'s TLS pass: HTTPS/1.1 (wrk) and HTTP/2 (h2load) through the LB and through nginx.

Near-free replicas (bench/nginx_replica.py: the proxy's own cost decides), one LB process and one nginx
worker, the same certificate (a throw-away EC P-256 pair made with openssl) and the same replicas: nginx
is pointed at the addresses the LB's /status reports. nginx's keepalive_requests is raised to 100,000
(its default, 1,000, would make wrk and h2load reconnect, and the LB has no such cap); h2load runs stay
under 1,000 requests per connection anyway. Writes --out (bench/out/tls.md) with req/s, p99 and CPU µs per
request, and the LB's ratios to nginx. Compare the ratios: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.nginx_conf import nginx_conf
from bench.proxy_bench import NEAR_FREE_REPLICA, WRK_SCRIPT, cpu_seconds, free_port, process_tree, to_ms

ROOT = Path(__file__).resolve().parent.parent
# Idle upstream connections each side may keep: h2load keeps 320 requests in flight, all with one key
# (one replica), so both keep enough for all of them (nginx's cap is per worker over all replicas, the
# LB's per replica: the same 384 each for the one replica used).
IDLE_PER_REPLICA = 384
REPLICAS = 3
NGINX_TLS = """
  upstream replicas {{
    hash $arg_id consistent;
{servers}
    keepalive {keepalive};
  }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000;
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}"""


@dataclass
class Row:
    name: str
    rps: float
    p99_ms: float
    cpu_us: float


def wait_https(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, verify=False, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "bench.crt", folder / "bench.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def wrk_https(name: str, url: str, script: Path, connections: int, seconds: int, pids: list[int]) -> Row:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    before = cpu_seconds(pids)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pids) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"warning: {name}: {out}", file=sys.stderr)
    return Row(name, rps, p99, cpu / max(requests, 1) * 1e6)


def h2load(name: str, url: str, work: Path, requests: int, pids: list[int]) -> Row:
    log = work / f"h2load-{time.monotonic_ns()}.log"
    cmd = ["h2load", "-n", str(requests), "-c", "32", "-m", "10", "--log-file", str(log), url]
    before = cpu_seconds(pids)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pids) - before
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    assert done is not None, out
    if done.group(1) != str(requests) or done.group(2) != str(requests):
        print(f"warning: {name}: {out}", file=sys.stderr)
    micros = sorted(
        int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2
    )
    p99 = micros[max(0, -(-99 * len(micros) // 100) - 1)] / 1000.0
    return Row(name, rps, p99, cpu / max(int(done.group(2)), 1) * 1e6)


def start_lb(port: int, tls_port: int, cert: Path, key: Path, tmp: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(
        LB_HOST="127.0.0.1",
        LB_PORT=str(port),
        LB_TLS_PORT=str(tls_port),
        LB_TLS_CERT=str(cert),
        LB_TLS_KEY=str(key),
        LB_REPLICAS=str(REPLICAS),
        LB_MAX_IDLE_CONNECTIONS=str(IDLE_PER_REPLICA),
        LB_LOG_LEVEL="warning",
        LB_DB_PATH=str(tmp / "votes.sqlite3"),
        LB_REPLICA_COMMAND=json.dumps(NEAR_FREE_REPLICA),
        TMPDIR=str(tmp),
    )
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--h2-requests", type=int, default=25_600, help="800 per connection: under 1,000")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "tls.md")
    args = parser.parse_args(argv)
    for tool in ("nginx", "wrk", "h2load", "openssl"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is missing: scripts/apt-install.sh nghttp2-client nginx wrk", file=sys.stderr)
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="chlb-tls-bench-"))
    lb = nginx = None
    rows: dict[str, list[Row]] = {}
    try:
        cert, key = make_cert(tmp)
        script = tmp / "keys.lua"
        script.write_text(WRK_SCRIPT)
        plain, lb_tls, nginx_tls = free_port(), free_port(), free_port()
        lb = start_lb(plain, lb_tls, cert, key, tmp)
        wait_https(f"https://127.0.0.1:{lb_tls}/home?id=1")
        addresses = [
            row["address"] for row in httpx.get(f"http://127.0.0.1:{plain}/status").json()["replicas"]
        ]
        work = tmp / "nginx"
        work.mkdir()
        servers = "\n".join(f"    server {a};" for a in addresses)
        http = NGINX_TLS.format(
            servers=servers, port=nginx_tls, cert=cert, key=key, keepalive=IDLE_PER_REPLICA * REPLICAS
        )
        (work / "nginx.conf").write_text(nginx_conf(work, http, workers=1))
        nginx = subprocess.Popen(
            [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(work / "nginx.conf"), "-p", str(work)]
        )
        wait_https(f"https://127.0.0.1:{nginx_tls}/home?id=1")
        targets = {"nginx": (nginx_tls, process_tree(nginx.pid)), "LB": (lb_tls, [lb.pid])}
        for n in range(args.passes):
            order = list(targets.items()) if n % 2 == 0 else list(reversed(targets.items()))
            for who, (port, pids) in order:
                url = f"https://127.0.0.1:{port}/home?id=1"
                wrk_https(who, url, script, 32, 2, pids)  # warm-up
                rows.setdefault(f"HTTPS/1.1 {who}", []).append(
                    wrk_https(who, url, script, 32, args.seconds, pids)
                )
                rows.setdefault(f"HTTP/2 {who}", []).append(h2load(who, url, tmp, args.h2_requests, pids))
    finally:
        for proc in (lb, nginx):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = write_report(rows, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def write_report(rows: dict[str, list[Row]], args: argparse.Namespace) -> list[str]:
    def mean(name: str) -> Row:
        rs = rows[name]
        return Row(name, *(sum(getattr(r, f) for r in rs) / len(rs) for f in ("rps", "p99_ms", "cpu_us")))

    lines = [
        "# TLS pass: the LB vs nginx, near-free replicas, 1 process each",
        "",
        f"wrk -t1 -c32 -d{args.seconds}s (HTTPS/1.1, keep-alive);"
        f" h2load -n {args.h2_requests} -c 32 -m 10 (HTTP/2);"
        f" mean of {args.passes} passes, order alternating.",
        "",
        "| protocol | who | req/s | p99 ms | CPU µs/req | req/s × nginx | p99 × nginx | CPU × nginx |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for protocol in ("HTTPS/1.1", "HTTP/2"):
        base = mean(f"{protocol} nginx")
        for who in ("nginx", "LB"):
            r = mean(f"{protocol} {who}")
            lines.append(
                f"| {protocol} | {who} | {r.rps:,.0f} | {r.p99_ms:.2f} | {r.cpu_us:.0f}"
                f" | {r.rps / base.rps:.2f} | {r.p99_ms / base.p99_ms:.2f} | {r.cpu_us / base.cpu_us:.2f} |"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
