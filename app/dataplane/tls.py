"""TLS at the edge: the certificates (a default pair and one per server name) and the protocol layer that
decrypts a client connection, then hands it to HTTP/1.1 or HTTP/2 as ALPN chose.

The layer is ours (ssl.SSLObject over memory BIOs), not the event loop's `ssl=`: the loop's layer fails a
handshake silently, and /metrics counts failed handshakes. It is a transport to the protocol above it
(ClientConnection, H2Connection) and a protocol to the socket's transport below.

SNI: LB_TLS_CERTS_DIR holds `<host>.crt` (the chain, leaf first) and `<host>.key` per server name, e.g.
`api.example.com.crt`; a client naming another host (or none) gets LB_TLS_CERT/LB_TLS_KEY.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

ALPN = ("h2", "http/1.1")
# Mozilla's "intermediate" TLS 1.2 suites (TLS 1.3's are OpenSSL's defaults, all fine).
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
READ_SIZE = 256 * 1024  # plaintext handed up per SSLObject.read


class CertificateError(Exception):
    """A certificate or key that cannot serve: its text is the one line the LB exits with."""


def make_context(cert: Path, key: Path, *, cert_setting: str, key_setting: str) -> ssl.SSLContext:
    """A server context for one pair: TLS 1.2 and 1.3 only, Mozilla intermediate, ALPN h2 then http/1.1."""
    for path, setting in ((cert, cert_setting), (key, key_setting)):
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CertificateError(f"invalid setting {setting}={path}: {exc.strerror or exc}") from None
        wanted = b"-----BEGIN CERTIFICATE-----" if path is cert else b"PRIVATE KEY-----"
        if wanted not in text:
            kind = "a PEM certificate" if path is cert else "a PEM private key"
            raise CertificateError(f"invalid setting {setting}={path}: not {kind}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN))
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise CertificateError(
                f"invalid setting {key_setting}={key}: it is not the key of {cert}"
            ) from None
        raise CertificateError(
            f"invalid settings {cert_setting}={cert}, {key_setting}={key}:"
            f" cannot be loaded ({exc.reason or exc})"
        ) from None
    return context


@dataclass(frozen=True)
class Certificates:
    """The default context and one per server name; the default's sni_callback switches between them."""

    default: ssl.SSLContext
    by_host: dict[str, ssl.SSLContext]

    @classmethod
    def load(cls, cert: Path, key: Path, certs_dir: Path | None) -> Certificates:
        """Load every pair now (a bad one is a CertificateError, before anything starts)."""
        default = make_context(cert, key, cert_setting="LB_TLS_CERT", key_setting="LB_TLS_KEY")
        by_host: dict[str, ssl.SSLContext] = {}
        if certs_dir is not None:
            if not certs_dir.is_dir():
                raise CertificateError(f"invalid setting LB_TLS_CERTS_DIR={certs_dir}: not a directory")
            for host_cert in sorted(certs_dir.glob("*.crt")):
                host = host_cert.name.removesuffix(".crt").lower()
                setting = f"LB_TLS_CERTS_DIR ({host})"
                by_host[host] = make_context(
                    host_cert, host_cert.with_suffix(".key"), cert_setting=setting, key_setting=setting
                )
        certificates = cls(default, by_host)
        if by_host:
            default.sni_callback = certificates.pick
        return certificates

    def pick(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        """ssl's SNI hook: the client's server name chooses the pair (None: keep the default)."""
        if server_name is not None:
            context = self.by_host.get(server_name.lower())
            if context is not None:
                sslobj.context = context
        return None


class UpperProtocol(Protocol):
    """What the layer hands plaintext to (ClientConnection, H2Connection): asyncio's stream protocol."""

    def connection_made(self, transport: Any) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


@dataclass(frozen=True)
class TlsEdge:
    """What every TLS connection of one process shares: certificates, what to run by ALPN, counters."""

    certificates: Certificates
    upper: Callable[[str], UpperProtocol]  # ALPN protocol ("h2" or "http/1.1") -> the protocol above
    handshake_timeout: float
    on_failed_handshake: Callable[[], None]


class TlsConnection(asyncio.Protocol, asyncio.Transport):
    """One TLS connection: a protocol to the socket below, a transport to HTTP above."""

    def __init__(self, edge: TlsEdge) -> None:
        super().__init__()
        self._edge = edge
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = edge.certificates.default.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._raw: asyncio.Transport | None = None
        self._upper: UpperProtocol | None = None
        self._paused = self._closing = self._lost = False
        self._timer: asyncio.TimerHandle | None = None
        self.alpn = ""

    # -- protocol, to the socket's transport ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the handshake clock."""
        self._raw = transport  # type: ignore[assignment]  # a socket transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._edge.handshake_timeout, self._on_handshake_timeout)

    def data_received(self, data: bytes) -> None:
        """Decrypt; the first bytes drive the handshake."""
        self._incoming.write(data)
        if self._upper is None:
            self._handshake()
        else:
            self._read()

    def eof_received(self) -> bool | None:
        """The client closed its side (TLS has no half-close: the connection ends)."""
        if self._upper is not None:
            self._upper.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Tell the protocol above."""
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._upper is not None:
            self._upper.connection_lost(exc)

    def pause_writing(self) -> None:
        """The socket's buffer is full."""
        if self._upper is not None:
            self._upper.pause_writing()

    def resume_writing(self) -> None:
        """The socket's buffer drained."""
        if self._upper is not None:
            self._upper.resume_writing()

    # -- transport, to the protocol above ---------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send."""
        if self._closing or self._lost:
            return
        view = memoryview(data)
        while view:
            view = view[self._sslobj.write(view) :]
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        """Encrypt and send each piece in one record stream."""
        self.write(b"".join(list_of_data))

    def pause_reading(self) -> None:
        """Stop handing plaintext up (and reading the socket)."""
        if not self._paused:
            self._paused = True
            if self._raw is not None and not self._lost:
                self._raw.pause_reading()

    def resume_reading(self) -> None:
        """Hand up what is already decrypted-to-be, then read the socket again."""
        if self._paused:
            self._paused = False
            if self._raw is not None and not self._lost:
                self._raw.resume_reading()
                if self._incoming.pending or self._sslobj.pending():
                    asyncio.get_running_loop().call_soon(self._read)

    def is_reading(self) -> bool:
        """Whether plaintext is handed up."""
        return not self._paused

    def close(self) -> None:
        """Say close_notify, send what is buffered, close."""
        if self._closing or self._raw is None:
            return
        self._closing = True
        if self._upper is not None and not self._lost:
            try:
                self._sslobj.unwrap()
            except (ssl.SSLError, ValueError):  # want-read (the peer's notify is not awaited) or broken
                pass
            self._flush()
        self._raw.close()

    def abort(self) -> None:
        """Drop the connection now."""
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        """Whether close() or abort() ran."""
        return self._closing or self._lost

    def can_write_eof(self) -> bool:
        """TLS cannot half-close."""
        return False

    def write_eof(self) -> None:
        """Not with TLS (can_write_eof says so)."""
        raise NotImplementedError("TLS cannot half-close")

    def get_write_buffer_size(self) -> int:
        """Bytes waiting in the socket's transport."""
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The socket transport's watermarks."""
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket's (peername, sockname, socket), plus ssl_object and alpn_protocol."""
        if name == "ssl_object":
            return self._sslobj
        if name == "alpn_protocol":
            return self.alpn
        return self._raw.get_extra_info(name, default) if self._raw is not None else default

    # -- internals --------------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError) as exc:
            self._flush()  # the alert, if any
            self._fail(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}")
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.alpn = self._sslobj.selected_alpn_protocol() or "http/1.1"
        upper = self._upper = self._edge.upper(self.alpn)
        upper.connection_made(self)
        if self._incoming.pending and not self._closing:
            self._read()

    def _read(self) -> None:
        sslobj, upper = self._sslobj, self._upper
        while not self._paused and not self._closing and upper is not None:
            try:
                chunk = sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                chunk = b""
            except ssl.SSLError as exc:
                logger.info("TLS error from %s: %s", self.get_extra_info("peername"), exc)
                self.abort()
                return
            if not chunk:
                upper.eof_received()
                self.close()
                return
            upper.data_received(chunk)
        if self._outgoing.pending:
            self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending and self._raw is not None and not self._lost:
            self._raw.write(self._outgoing.read())

    def _fail(self, reason: str) -> None:
        peer = self.get_extra_info("peername")
        logger.debug("TLS handshake with %s failed: %s", peer, reason)
        self._edge.on_failed_handshake()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._raw is not None:
            self._closing = True
            self._raw.close()

    def _on_handshake_timeout(self) -> None:
        self._timer = None
        if self._upper is None and not self._lost:
            self._fail("no handshake in time")
