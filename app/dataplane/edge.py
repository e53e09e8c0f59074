"""The HTTPS listener next to the plain one (LB_TLS_CERT, LB_TLS_KEY): HTTP/2 or HTTP/1.1 by ALPN.

Every process of the LB serves it: the owner binds LB_TLS_PORT before any replica starts (a bad
certificate or a port in use is one line and exit 2), each worker binds the same port (SO_REUSEPORT).
It starts once the lifespan is done, like the plain port, and closes with it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from dataclasses import replace

import uvicorn

from app.dataplane.front import Front
from app.dataplane.http2 import H2Connection
from app.dataplane.server import ClientConnection
from app.dataplane.tls import ALPN, CertificateError, Certificates, TlsConnection, TlsEdge, UpperProtocol
from app.settings import BAD_SETTINGS, Settings

logger = logging.getLogger(__name__)


class TlsListener:
    """The HTTPS socket of one process, what it serves with, and what /status says of it."""

    front: Front

    def __init__(
        self, sock: socket.socket, certificates: Certificates, max_streams: int, redirect: bool
    ) -> None:
        self.sock = sock
        self.certificates = certificates
        self.redirect = redirect
        self.max_streams = max_streams
        self.port = int(sock.getsockname()[1])
        self.hosts = sorted(certificates.by_host)  # server names with their own certificate (SNI)
        self.protocols = list(ALPN)
        self.edge: TlsEdge | None = None  # once listening: what each new connection is made with

    def use(self, certificates: Certificates) -> None:
        """New certificates (a reload) for new connections; open ones keep the one they shook hands with."""
        self.certificates = certificates
        self.hosts = sorted(certificates.by_host)
        if self.edge is not None:
            self.edge = replace(self.edge, certificates=certificates)

    def serving(self, front: Front) -> TlsListener:
        """Serve for `front` (and point its LB_HTTPS_REDIRECT there); self."""
        self.front = front
        if self.redirect:
            front.https_port = self.port
        return self

    async def start(self, server: uvicorn.Server) -> None:
        """Listen with uvicorn's config and state, so its shutdown waits for these connections too."""
        config, state, app_state = server.config, server.server_state, server.lifespan.state
        loop = asyncio.get_running_loop()
        front = self.front

        def upper(alpn: str) -> UpperProtocol:
            if alpn == "h2":
                return H2Connection(config, state, app_state, front=front, max_streams=self.max_streams)
            connection = ClientConnection(config, state, app_state, loop, front=front)
            connection.secure = True
            return connection

        limits = front.limits
        self.edge = edge = TlsEdge(
            self.certificates, upper, limits.header_timeout, self._failed, limits.send_timeout
        )

        def connection() -> TlsConnection:
            return TlsConnection(self.edge or edge)  # the latest certificates (a reload swaps self.edge)

        listening = await loop.create_server(connection, sock=self.sock, backlog=config.backlog)
        server.servers.append(listening)

    def _failed(self) -> None:
        plane = self.front.data_plane
        if plane is not None:
            plane.stats.tls_handshake_failures += 1


class EdgeServer(uvicorn.Server):
    """uvicorn serving the plain port, plus the HTTPS one when `tls` is set."""

    tls: TlsListener | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.tls is not None and not self.should_exit:
            await self.tls.start(self)


def load_certificates(settings: Settings) -> Certificates | None:
    """LB_TLS_CERT, LB_TLS_KEY and LB_TLS_CERTS_DIR read now (None without TLS); CertificateError if bad."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return Certificates.load(settings.tls_cert, settings.tls_key, settings.tls_certs_dir)


def prepare_tls(settings: Settings, *, worker: bool = False) -> TlsListener | None:
    """Load the certificates and bind LB_TLS_PORT (None without LB_TLS_CERT); a problem exits 2 in one line.

    The owner's settings then carry the bound port (app.launch), so workers bind the same one when it was 0.
    """
    try:
        certificates = load_certificates(settings)
    except CertificateError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(BAD_SETTINGS) from None
    if certificates is None:
        return None
    host = settings.host
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, settings.tls_port))
    except OSError as exc:
        sock.close()
        sys.stderr.write(
            f"cannot listen on {host}:{settings.tls_port} (LB_TLS_PORT): {exc.strerror or exc}\n"
        )
        raise SystemExit(BAD_SETTINGS) from None
    listener = TlsListener(sock, certificates, settings.h2_max_streams, settings.https_redirect)
    if not worker:
        shown = "localhost" if host in ("", "0.0.0.0", "::") else host
        logger.info("HTTPS (h2, http/1.1) on https://%s:%d", shown, listener.port)
    return listener
