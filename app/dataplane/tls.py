"""TLS at the edge: the certificates (a default pair and one per server name) and the protocol that
accepts a client connection, has it shake hands, then hands it to HTTP/1.1 or HTTP/2 as ALPN chose.

The event loop's TLS layer (uvloop's, compiled) encrypts and decrypts: our own layer over memory BIOs cost
a Python call per read and per write. It is started with `loop.start_tls` rather than the listener's
`ssl=`, because the listener's layer fails a handshake silently and /metrics counts failed handshakes:
start_tls raises. Its plaintext then goes straight to the protocol above (ClientConnection, H2Connection).

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
from typing import Any, Protocol, cast

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
    """What the TLS connection is handed to once ALPN chose (ClientConnection, H2Connection)."""

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
    shutdown_timeout: float = 60.0  # a closing connection waits this long for its last bytes to go out


class TlsConnection(asyncio.Protocol):
    """One TLS connection until its handshake is over: then the protocol ALPN chose takes it over.

    The socket's protocol only until `loop.start_tls` takes the socket (the task it runs in starts a turn
    of the loop later: bytes that come meanwhile are kept and handed to the TLS layer first); then the TLS
    layer's protocol above it until the upper one is connected, handing on anything that reached it.
    """

    def __init__(self, edge: TlsEdge) -> None:
        super().__init__()
        self._edge = edge
        self._raw: asyncio.Transport | None = None
        self._upper: UpperProtocol | None = None
        self._wrapped = False  # start_tls has the socket: data_received gets plaintext
        self._early: list[bytes] = []  # what came before start_tls (ciphertext) or before the upper protocol
        self._eof = False
        self._lost: tuple[Exception | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.alpn = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """A client connected: shake hands (the event loop's TLS), in a task."""
        self._raw = raw = cast(asyncio.Transport, transport)
        self._task = asyncio.get_running_loop().create_task(self._shake_hands(raw))

    async def _shake_hands(self, raw: asyncio.Transport) -> None:
        edge, loop = self._edge, asyncio.get_running_loop()
        if self._lost is not None:  # gone already
            return
        if self._early:  # the ClientHello, read before start_tls: the TLS layer gets it before the socket's
            loop.call_soon(self._hand_over, raw, b"".join(self._early))
            self._early = []
        self._wrapped = True
        try:
            tls = await loop.start_tls(
                raw,
                self,
                edge.certificates.default,
                server_side=True,
                ssl_handshake_timeout=edge.handshake_timeout,
                ssl_shutdown_timeout=edge.shutdown_timeout,
            )
        except (ssl.SSLError, ConnectionAbortedError, TimeoutError) as exc:
            # A TLS alert, a client that does not speak TLS, no handshake in time (ConnectionAbortedError).
            reason = getattr(exc, "reason", None) or exc
            logger.debug(
                "TLS handshake with %s failed: %s: %s",
                raw.get_extra_info("peername"),
                type(exc).__name__,
                reason,
            )
            edge.on_failed_handshake()
            return  # the TLS layer has closed the socket
        except OSError:  # the client left before the handshake ended: not a failed handshake
            return
        if tls is None or self._lost is not None or tls.is_closing():
            return
        sslobj = tls.get_extra_info("ssl_object")
        self.alpn = (sslobj.selected_alpn_protocol() if sslobj is not None else None) or "http/1.1"
        upper = self._upper = edge.upper(self.alpn)
        tls.set_protocol(upper)  # type: ignore[arg-type]  # an asyncio protocol by its methods
        upper.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            upper.data_received(data)
        if self._eof:
            upper.eof_received()

    @staticmethod
    def _hand_over(raw: asyncio.Transport, data: bytes) -> None:
        """Give the TLS layer (now the socket's protocol, not connected yet) the bytes read before it."""
        layer: Any = raw.get_protocol()
        if not hasattr(layer, "buffer_updated"):
            layer.data_received(data)
            return
        view = memoryview(data)
        while view:
            buffer = layer.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            layer.buffer_updated(size)
            view = view[size:]

    # -- what the socket, then the TLS layer, may call before the upper protocol is connected ----------

    def data_received(self, data: bytes) -> None:
        """Before start_tls: ciphertext, kept for it; then plaintext, the upper protocol's."""
        if self._upper is not None:
            self._upper.data_received(data)
            return
        self._early.append(data)
        if not self._wrapped and self._raw is not None:
            self._raw.pause_reading()  # start_tls reads on

    def eof_received(self) -> bool | None:
        """The client's close_notify."""
        if self._upper is not None:
            return self._upper.eof_received()
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection ended (before the TLS layer took over, or before the upper protocol was told)."""
        if self._upper is not None:
            self._upper.connection_lost(exc)
        else:
            self._lost = (exc,)

    def pause_writing(self) -> None:
        """The socket's buffer is full."""
        if self._upper is not None:
            self._upper.pause_writing()

    def resume_writing(self) -> None:
        """The socket's buffer drained."""
        if self._upper is not None:
            self._upper.resume_writing()
