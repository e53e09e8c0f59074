"""Change it live: LB_CONFIG_FILE re-read on SIGHUP and POST /config/reload, under load, in every process."""

from __future__ import annotations

import http.client
import os
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.h2_clients import tls_socket
from tests.lb_support import LBFactory, RunningLB, fresh_get, served_by, worker_pids
from tests.load import BackgroundLoad
from tests.polling import wait_until
from tests.tls_support import make_pair

CLIENTS = 6
LOAD_SECONDS_MAX = 60.0  # a bound: the load stops as soon as the reloads are checked
KEYS = [str(100_000 + k) for k in range(120)]


@dataclass
class KeepAliveLoad(BackgroundLoad):
    """Keep-alive clients (http.client) sending GETs: every failure and every connection the LB closed."""

    port: int
    ok: int = 0
    closed: int = 0

    def _run(self, worker: int, deadline: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = 0
        while self._running(deadline):
            sent += 1
            try:
                conn.request("GET", f"/home?id={worker}-{sent}")
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.errors.append(f"client {worker}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            with self._lock:
                if response.status != 200:
                    self.errors.append(f"client {worker}: {response.status}")
                self.ok += 1
                if response.will_close:  # the LB said Connection: close
                    self.closed += 1
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lb.toml"
    path.write_text('strategy = "rendezvous"\nheader_timeout = 10\n')
    return path


@pytest.fixture
def lb(lb_factory: LBFactory, config_file: Path) -> RunningLB:
    return lb_factory(replicas="3", workers="2", config_file=str(config_file))


def config(lb: RunningLB) -> dict[str, Any]:
    body: dict[str, Any] = fresh_get(lb, "/config").json()
    return body


def reloaded_since(lb: RunningLB, loaded_at: float) -> bool:
    return bool(config(lb)["loaded_at"] > loaded_at)


def worker_requests(lb: RunningLB) -> dict[int, int]:
    """Requests served per LB process (index 0: the owner), as /status reports them."""
    rows = fresh_get(lb, "/status").json()["workers"]
    return {row["index"]: row["requests"] for row in rows}


def test_reloads_under_load_lose_nothing_and_every_process_routes_by_the_new_strategy(
    lb: RunningLB, config_file: Path
) -> None:
    with KeepAliveLoad(lb.port, workers=CLIENTS, max_requests=100_000, max_seconds=LOAD_SECONDS_MAX) as load:
        wait_until(lambda: load.ok > 50, timeout=20)
        before = config(lb)["loaded_at"]
        config_file.write_text(
            'strategy = "ketama"\nheader_timeout = 5\nbalance_factor = 2.0\nread_timeout = 8\n'
        )
        lb.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: reloaded_since(lb, before), timeout=20)
        seen = load.ok
        wait_until(lambda: load.ok > seen + 50, timeout=20)  # the load goes on across the reload
        config_file.write_text(
            'strategy = "maglev"\nheader_timeout = 7\nbody_timeout = 30\nmax_header_bytes = 2048\n'
        )
        answer = fresh_get_post(lb, "/config/reload")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["applied"] == [
            "strategy",
            "read_timeout",
            "header_timeout",
            "body_timeout",
            "max_header_bytes",
            "balance_factor",
        ]
        assert 0 < body["moved_share"] < 1 and body["restart_needed"] == []
        seen = load.ok
        wait_until(lambda: load.ok > seen + 50, timeout=20)
    assert load.errors == [] and load.closed == 0, (load.errors[:5], load.closed)
    shown = config(lb)
    assert shown["settings"]["strategy"] == "maglev" and shown["settings"]["balance_factor"] is None
    assert shown["origins"]["strategy"] == "file" and shown["origins"]["balance_factor"] == "default"
    # Every process routes by maglev now: what /route names is what answers, on connections the kernel
    # spreads over both processes.
    served = worker_requests(lb)
    for key in KEYS:
        named = fresh_get(lb, "/route", key=key).json()["replica"]
        message = fresh_get(lb, "/home", id=key).json()["message"]
        assert message == f"Hello from Server: {named}", key
    wait_until(lambda: all(worker_requests(lb)[i] > served[i] for i in served), timeout=10)
    # ... and every process holds the new client limits: a 3,000-byte header is over 2,048 now.
    padded = [fresh_get(lb, "/home", id=key, pad="a" * 3000).status_code for key in KEYS[:40]]
    assert padded == [431] * 40
    assert "configuration reloaded (SIGHUP); applied: strategy" in lb.log()


def fresh_get_post(lb: RunningLB, path: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{lb.url}{path}", timeout=30, headers={"connection": "close", **headers})


def test_a_bad_file_changes_nothing_and_names_each_problem(lb: RunningLB, config_file: Path) -> None:
    before = config(lb)
    config_file.write_text('stratgy = "ketama"\nheader_timeout = -1\n')
    answer = fresh_get_post(lb, "/config/reload")
    assert answer.status_code == 400
    assert answer.json()["problems"] == [
        f"{config_file}: 'stratgy' is not a setting; did you mean 'strategy'?"
    ]
    config_file.write_text('strategy = "ketama"\nheader_timeout = -1\nmax_tries = 0\n')
    answer = fresh_get_post(lb, "/config/reload")
    assert answer.status_code == 400
    problems = answer.json()["problems"]
    assert problems == [  # in the settings' order
        f"invalid setting max_tries=0 in {config_file}: Input should be greater than or equal to 1",
        f"invalid setting header_timeout=-1 in {config_file}: Input should be greater than 0",
    ]
    assert answer.json()["message"].startswith("<Error> Reload refused, nothing changed: invalid setting")
    after = config(lb)
    assert after == before  # same values, same load time
    lb.proc.send_signal(signal.SIGHUP)  # the same bad file by signal: one error line, the LB lives on
    wait_until(lambda: "reload on SIGHUP refused, nothing changed: invalid setting max_tries=0" in lb.log())
    assert lb.proc.poll() is None and config(lb) == before


def test_a_restart_only_change_is_reported_and_keeps_its_running_value(
    lb: RunningLB, config_file: Path
) -> None:
    config_file.write_text(
        'strategy = "rendezvous"\nheader_timeout = 10\nvote_options = ["a", "b"]\nreplica_host = "::1"\n'
    )
    answer = fresh_get_post(lb, "/config/reload")
    assert answer.status_code == 200
    assert answer.json()["applied"] == [] and answer.json()["restart_needed"] == [
        "replica_host",
        "vote_options",
    ]
    assert (
        "need a restart to take effect (running values kept): replica_host, vote_options"
        in answer.json()["message"]
    )
    shown = config(lb)
    assert shown["settings"]["replica_host"] == "127.0.0.1" and shown["restart_needed"] == [
        "replica_host",
        "vote_options",
    ]
    assert len(lb.replicas()) == 3


def test_config_shows_origins_and_hides_secrets(lb_factory: LBFactory, config_file: Path) -> None:
    config_file.write_text('strategy = "ketama"\nkey_name = "user"\n')
    lb = lb_factory(replicas="1", config_file=str(config_file), admin_token="s3cret-token", key_name="uid")
    shown = config(lb)
    assert shown["settings"]["admin_token"] == "**********" and "s3cret" not in str(shown)
    assert shown["origins"]["strategy"] == "file" and shown["origins"]["key_name"] == "environment"
    assert shown["settings"]["key_name"] == "uid" and shown["config_file"] == str(config_file)
    assert fresh_get(lb, "/status").json()["config_loaded_at"] == shown["loaded_at"]  # the dashboard's
    assert fresh_get_post(lb, "/config/reload").status_code == 401  # a reload is an admin's
    answer = fresh_get_post(lb, "/config/reload", authorization="Bearer s3cret-token")
    assert answer.status_code == 200 and answer.json()["applied"] == []
    assert (
        fresh_get(lb, "/status").json()["config_loaded_at"] == answer.json()["loaded_at"] > shown["loaded_at"]
    )


@pytest.fixture
def no_workers_lb(lb_factory: LBFactory, config_file: Path) -> Iterator[RunningLB]:
    yield lb_factory(replicas="2", config_file=str(config_file))


def test_client_limits_apply_to_open_connections(no_workers_lb: RunningLB, config_file: Path) -> None:
    """max_header_bytes lowered by a reload holds for the next request of a connection opened before."""
    lb = no_workers_lb
    conn = http.client.HTTPConnection("127.0.0.1", lb.port, timeout=10)
    conn.request("GET", "/home?id=1", headers={"x-pad": "a" * 3000})
    assert conn.getresponse().read() and True
    config_file.write_text('strategy = "rendezvous"\nheader_timeout = 10\nmax_header_bytes = 2048\n')
    assert fresh_get_post(lb, "/config/reload").json()["applied"] == ["max_header_bytes"]
    conn.request("GET", "/home?id=1", headers={"x-pad": "a" * 3000})
    assert conn.getresponse().status == 431
    conn.close()


def test_a_worker_restarted_after_the_file_broke_takes_the_owners_settings(
    lb: RunningLB, config_file: Path
) -> None:
    """Workers read no settings file of their own: a bad edit not yet reloaded cannot stop a restarted one."""
    config_file.write_text("strategy = \n")  # not TOML
    (old,) = worker_pids(lb)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: worker_pids(lb) not in ([], [old]), timeout=30)
    (new,) = worker_pids(lb)
    wait_until(lambda: served_by(lb, new), timeout=30)  # it serves the port
    assert "invalid" not in lb.log() and "cannot be read" not in lb.log()
    statuses = [fresh_get(lb, "/home", id=key).status_code for key in KEYS[:20]]
    assert statuses == [200] * 20


def served_certificate(port: int) -> bytes:
    """The certificate a new HTTPS/1.1 connection gets (DER)."""
    with tls_socket(port, alpn=("http/1.1",)) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def https_get(sock: ssl.SSLSocket, key: str) -> int:
    """One keep-alive GET on an open HTTPS/1.1 connection; its status."""
    sock.sendall(f"GET /home?id={key} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    response = http.client.HTTPResponse(sock)  # reads from the socket's file
    response.begin()
    response.read()
    return response.status


def test_a_certificate_replaced_on_disk_is_served_to_new_connections_after_a_reload(
    lb_factory: LBFactory, tmp_path: Path
) -> None:
    first = make_pair(tmp_path / "first", "site")
    lb = lb_factory(replicas="2", workers="2", tls_cert=str(first.cert), tls_key=str(first.key), tls_port="0")
    port = int(fresh_get(lb, "/status").json()["tls"]["port"])
    old = served_certificate(port)
    assert old == ssl.PEM_cert_to_DER_cert(first.cert.read_text())
    # An open connection keeps the certificate it has.
    with tls_socket(port, alpn=("http/1.1",)) as kept:
        assert https_get(kept, "1") == 200
        second = make_pair(tmp_path / "second", "site")
        broken = tmp_path / "broken.key"
        broken.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
        first.key.write_bytes(broken.read_bytes())  # a bad key on disk: refused, the old pair stays
        answer = fresh_get_post(lb, "/config/reload")
        assert answer.status_code == 400 and "LB_TLS_KEY" in answer.json()["problems"][0], answer.text
        assert {served_certificate(port) for _ in range(10)} == {old}
        first.cert.write_bytes(second.cert.read_bytes())
        first.key.write_bytes(second.key.read_bytes())
        answer = fresh_get_post(lb, "/config/reload")
        assert answer.status_code == 200, answer.text
        new = ssl.PEM_cert_to_DER_cert(second.cert.read_text())
        assert {served_certificate(port) for _ in range(20)} == {new}  # every process (20 connections)
        assert https_get(kept, "2") == 200 and kept.getpeercert(binary_form=True) == old


def test_a_new_limit_holds_for_the_next_stream_of_an_open_http2_connection(
    lb_factory: LBFactory, tmp_path: Path
) -> None:
    pair = make_pair(tmp_path / "certs", "site")
    config_file = tmp_path / "lb.toml"
    config_file.write_text("max_control_body_bytes = 65536\n")
    lb = lb_factory(
        replicas="1",
        config_file=str(config_file),
        tls_cert=str(pair.cert),
        tls_key=str(pair.key),
        tls_port="0",
    )
    port = int(fresh_get(lb, "/status").json()["tls"]["port"])
    body = {"option": "docker", "padding": "x" * 3000}  # 3 KB: under the first limit, over the second
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", http2=True, verify=False, timeout=20) as client:
        first = client.post("/api/vote", json=body, headers={"X-Voter-Id": "alice-0001"})
        assert first.http_version == "HTTP/2" and first.status_code == 400  # read, then refused: extra field
        config_file.write_text("max_control_body_bytes = 1024\n")
        assert fresh_get_post(lb, "/config/reload").json()["applied"] == ["max_control_body_bytes"]
        second = client.post("/api/vote", json=body, headers={"X-Voter-Id": "alice-0001"})
        assert second.http_version == "HTTP/2" and second.status_code == 413, second.text
