"""`make bench`: the LB against nginx (`hash $arg_id consistent`) and a direct call, in one run.

Two passes. "Python replicas": the LB starts its 3 usual replicas; nginx is pointed at the same ones.
"Near-free replicas": each replica is an nginx answering the replica JSON (bench/nginx_replica.py), so
the proxy's own cost decides the throughput. Each target is loaded with wrk (same script, same
connections); the CPU time of the proxy process(es) is read from /proc around each run. Prints and
writes --out (bench/out/results.md; `make bench-report`: the committed bench/results.md): req/s,
p50/p99, CPU µs per request, and the ratios to nginx and to a direct call. Absolute numbers are noisy
on a shared 2-core machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
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

from bench.nginx_conf import nginx_conf
from bench.report import publish

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/home?id=" .. math.random(100000, 999999))
end
"""
# The same requests at about the same load for nginx and the LB: each connection pauses PACE_MS before
# its next request (32 connections: at most ~10k req/s, about half of what LB_WORKERS=1 serves at full
# load). At full load latency is mostly queueing, which grows as 1/throughput; here less of it is.
PACE_MS = 3
PACED_SCRIPT = WRK_SCRIPT + f"delay = function()\n  return {PACE_MS}\nend\n"
PROXY = """
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
  }}"""


NGINX_1 = "nginx 1 worker, hash $arg_id consistent"
LB_1 = "this LB, LB_WORKERS=1"
LB_1_PY = "this LB, LB_WORKERS=1, interpreted (LB_COMPILED=false)"
NGINX_2 = "nginx 2 workers"
LB_2 = "this LB, LB_WORKERS=2"
SEED = "the seed's design (Flask dev server + requests, md5 % N)"
NEAR_FREE_REPLICA = [sys.executable, "-m", "bench.nginx_replica", "--fd", "{fd}", "--port", "{port}"]


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # CPU time of the proxy per request (µs); 0 when there is no proxy


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far, from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's master and workers)."""
    found, todo = [pid], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


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


def run_wrk(
    name: str, url: str, script: Path, connections: int, seconds: int, pids: list[int] | None = None
) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    cpu_before = cpu_seconds(pids or [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    cpu = cpu_seconds(pids or []) - cpu_before
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk against {name} printed no latency distribution:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: a "+/- Stdev" column such as "62.50%" must not pass for the 50th percentile.
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        print(f"warning: {name}: {out}", file=sys.stderr)
    return Result(name, rps, p50, p99, cpu / max(requests, 1) * 1e6 if pids else 0.0)


def start_lb(
    port: int,
    tmp: Path,
    replica_command: list[str] | None = None,
    workers: int = 1,
    compiled: bool = True,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
    env.update(
        LB_HOST="127.0.0.1",
        LB_PORT=str(port),
        LB_REPLICAS="3",
        LB_LOG_LEVEL="warning",
        LB_DB_PATH=str(tmp / f"votes-{port}.sqlite3"),
        LB_WORKERS=str(workers),
        LB_COMPILED=str(compiled).lower(),
        TMPDIR=str(tmp),  # the near-free replicas' nginx folders land here, removed with it at the end
    )
    if replica_command:
        env["LB_REPLICA_COMMAND"] = json.dumps(replica_command)
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env)


def lb_pids(lb: subprocess.Popen[bytes]) -> list[int]:
    """The LB's own processes: the owner and its data-plane workers (not its replicas)."""
    pids = [lb.pid]
    for pid in process_tree(lb.pid)[1:]:
        try:
            if b"app.dataplane.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def start_nginx(work: Path, port: int, addresses: list[str], workers: int) -> subprocess.Popen[bytes]:
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    work.mkdir()
    servers = "\n".join(f"    server {addr};" for addr in addresses)
    conf = work / "nginx.conf"
    conf.write_text(nginx_conf(work, PROXY.format(servers=servers, port=port), workers=workers))
    proc = subprocess.Popen([nginx_bin, "-c", str(conf), "-p", str(work)])
    wait_http(f"http://127.0.0.1:{port}/home?id=1")
    return proc


def run_pass(
    label: str,
    tmp: Path,
    script: Path,
    args: argparse.Namespace,
    replica_command: list[str] | None,
    two_workers: bool,
    seed: bool = False,
    paced: Path | None = None,
    interpreted: bool = False,
) -> tuple[dict[str, Result], dict[str, Result]]:
    """Start the LB and nginx on the same replicas (and the 2-process pair); load each target in turn.

    With `paced` (a wrk script that pauses between requests), nginx 1 worker and LB_WORKERS=1 are also
    loaded at the same moderate rate: the second dict. With `interpreted`, also an LB that runs the hot
    path's Python source (LB_COMPILED=false), on replicas of its own of the same kind.
    """
    procs: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []
    try:
        lb_port, nginx_port = free_port(), free_port()
        lb = start_lb(lb_port, tmp, replica_command)
        procs.append((lb, signal.SIGTERM))
        wait_http(f"http://127.0.0.1:{lb_port}/rep")
        rows = httpx.get(f"http://127.0.0.1:{lb_port}/status").json()["replicas"]
        addresses = [row["address"] for row in rows]
        nginx = start_nginx(tmp / f"nginx-{label}", nginx_port, addresses, 1)
        procs.append((nginx, signal.SIGQUIT))
        targets: dict[str, tuple[str, list[int] | None]] = {
            "direct (one replica, no proxy)": (f"http://{addresses[0]}", None),
            NGINX_1: (f"http://127.0.0.1:{nginx_port}", process_tree(nginx.pid)),
            LB_1: (f"http://127.0.0.1:{lb_port}", [lb.pid]),
        }
        if seed:
            seed_port = free_port()
            urls = ",".join(f"http://{addr}" for addr in addresses)
            seed_lb = subprocess.Popen(
                [sys.executable, "-m", "bench.seed_lb", "--port", str(seed_port), "--replicas", urls],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append((seed_lb, signal.SIGTERM))
            wait_http(f"http://127.0.0.1:{seed_port}/home?id=1")
            targets[SEED] = (f"http://127.0.0.1:{seed_port}", [seed_lb.pid])
        if interpreted:
            py_port = free_port()
            lb_py = start_lb(py_port, tmp, replica_command, compiled=False)
            procs.append((lb_py, signal.SIGTERM))
            wait_http(f"http://127.0.0.1:{py_port}/rep")
            targets[LB_1_PY] = (f"http://127.0.0.1:{py_port}", [lb_py.pid])
        if two_workers:
            lb2_port, nginx2_port = free_port(), free_port()
            lb2 = start_lb(lb2_port, tmp, replica_command, workers=2)
            procs.append((lb2, signal.SIGTERM))
            wait_http(f"http://127.0.0.1:{lb2_port}/rep")
            nginx2 = start_nginx(tmp / f"nginx2-{label}", nginx2_port, addresses, 2)
            procs.append((nginx2, signal.SIGQUIT))
            deadline = time.monotonic() + 60
            while len(lb_pids(lb2)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            targets[NGINX_2] = (f"http://127.0.0.1:{nginx2_port}", process_tree(nginx2.pid))
            targets[LB_2] = (f"http://127.0.0.1:{lb2_port}", lb_pids(lb2))
        samples: dict[str, list[Result]] = {name: [] for name in targets}
        for _ in range(args.passes):
            for name, (url, pids) in targets.items():
                run_wrk(name, url, script, args.connections, 2)  # warm-up: pools, caches
                samples[name].append(run_wrk(name, url, script, args.connections, args.seconds, pids))
        same_load: dict[str, list[Result]] = {NGINX_1: [], LB_1: []} if paced else {}
        for _ in range(args.passes):
            for name, runs in same_load.items():
                url, pids = targets[name]
                assert paced is not None
                runs.append(run_wrk(name, url, paced, args.connections, args.seconds, pids))
    finally:
        for proc, sig in reversed(procs):
            proc.send_signal(sig)
            proc.wait(20)
    return (
        {name: mean(name, rs) for name, rs in samples.items()},
        {name: mean(name, rs) for name, rs in same_load.items()},
    )


def mean(name: str, rs: list[Result]) -> Result:
    n = len(rs)
    return Result(
        name,
        sum(r.rps for r in rs) / n,
        sum(r.p50_ms for r in rs) / n,
        sum(r.p99_ms for r in rs) / n,
        sum(r.cpu_us for r in rs) / n,
    )


def table(title: str, results: dict[str, Result]) -> list[str]:
    direct, nginx_r = results["direct (one replica, no proxy)"], results[NGINX_1]
    lines = [
        f"## {title}",
        "",
        "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | × nginx req/s | × direct |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        baseline = results.get(NGINX_2, nginx_r) if r.name in (NGINX_2, LB_2) else nginx_r
        cpu = f"{r.cpu_us:.0f}" if r.cpu_us else "—"
        lines.append(
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu} | "
            f"{r.rps / baseline.rps:.2f} | {r.rps / direct.rps:.2f} |"
        )
    lines.append("")
    if SEED in results:
        seed = results[SEED]
        for ours in (LB_1, LB_2):
            if ours in results:
                lb = results[ours]
                lines.append(
                    f"- {ours} vs {SEED}: req/s **{lb.rps / seed.rps:.0f}**×; "
                    f"the seed uses {seed.cpu_us / max(lb.cpu_us, 1e-9):.0f}× this LB's CPU per request."
                )
    for ours, theirs in ((LB_1, NGINX_1), (LB_1_PY, NGINX_1), (LB_2, NGINX_2), (LB_1, LB_1_PY)):
        if ours in results and theirs in results:
            o, t = results[ours], results[theirs]
            lines.append(
                f"- {ours} vs {theirs}: req/s **{o.rps / t.rps:.2f}**×, p99 **{o.p99_ms / t.p99_ms:.2f}**×, "
                f"CPU per request **{o.cpu_us / max(t.cpu_us, 1e-9):.2f}**×."
            )
    lines.append("")
    return lines


def same_load_table(results: dict[str, Result]) -> list[str]:
    """Latency at the same moderate load (near-free replicas): what the proxy adds, without queueing."""
    nginx_r, lb = results[NGINX_1], results[LB_1]
    lines = [
        f"### Same load: each connection pauses {PACE_MS} ms between requests",
        "",
        "| target | req/s | p50 ms | p99 ms | proxy CPU µs/req |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results.values():
        lines.append(f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us:.0f} |")
    lines += [
        "",
        f"- {LB_1} vs {NGINX_1} at the same load: p50 **{lb.p50_ms / nginx_r.p50_ms:.2f}**×, "
        f"p99 **{lb.p99_ms / nginx_r.p99_ms:.2f}**×.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--only", choices=["python", "near-free"], default=None)
    # The committed bench/results.md changes only when named (`make bench-report`).
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "results.md")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            parser.error(f"{tool} is not installed (make bench installs it)")

    tmp = Path(tempfile.mkdtemp(prefix="chlb-bench-"))
    script = tmp / "keys.lua"
    script.write_text(WRK_SCRIPT)
    paced = tmp / "paced.lua"
    paced.write_text(PACED_SCRIPT)
    sections: list[str] = [
        f"# Proxy benchmark: wrk -t1 -c{args.connections} -d{args.seconds}s, GET /home?id=<random>, "
        f"mean of {args.passes} passes",
        "",
    ]
    try:
        if args.only in (None, "python"):
            results, _ = run_pass("python", tmp, script, args, None, two_workers=False, seed=True)
            sections += table("Python replicas (the LB's own replica_service)", results)
        if args.only in (None, "near-free"):
            results, same_load = run_pass(
                "near-free",
                tmp,
                script,
                args,
                NEAR_FREE_REPLICA,
                two_workers=True,
                seed=True,
                paced=paced,
                interpreted=True,
            )
            title = "Near-free replicas (nginx answering the replica JSON): the proxy's own cost"
            sections += table(title, results)
            sections += same_load_table(same_load)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sections.append(
        "Machine: 2 shared cores; wrk, the proxy and the 3 replicas all run on them. Compare ratios only. "
        "CPU µs/req: user + system time of the proxy process(es) from /proc during the run, per request."
    )
    text = "\n".join(sections) + "\n"
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
