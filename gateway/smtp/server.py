"""The SMTP front end of one worker process: listening socket, sessions, graceful stop.

Several worker processes can share one port (`[smtp] workers`): either bind once with
`bind_listener` in the parent and hand the socket to each child (fork inherits it), or let
each worker call `bind_listener(listen, reuse_port=True)` on the same fixed port and the
kernel spreads connections over them (SO_REUSEPORT). Then `await front_end.start(sock)`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl

from gateway.checks.greylist import Greylist
from gateway.config import Config, SmtpConfig, parse_hostport
from gateway.errors import GatewayError
from gateway.pipeline.engine import Pipeline
from gateway.queue.spool import Spool
from gateway.smtp.handler import (
    DeliveryNotifier,
    QuarantineSink,
    RecipientChecker,
    SmtpHandler,
)
from gateway.smtp.limits import ConnectionLimiter
from gateway.smtp.session import GatewaySMTP

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024
# aiosmtpd's own timer closes any session that outlives this, whatever state it is in.
BACKSTOP_SLACK_S = 60.0


def bind_listener(listen: str, reuse_port: bool = True) -> socket.socket:
    """A listening, non-blocking TCP socket on `host:port` ("[v6]:port" for IPv6)."""
    host, port = parse_hostport(listen, 25)
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def tls_context(config: SmtpConfig) -> ssl.SSLContext | None:
    """The server TLS context when a certificate is configured (STARTTLS is offered then)."""
    if not (config.tls_cert and config.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except OSError as exc:  # e.g. a key the dropped user may not read
        raise GatewayError(f"[smtp] tls_cert/tls_key: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise GatewayError(f"[smtp] tls_cert/tls_key: {exc.reason or exc}") from None
    return context


class SmtpFrontEnd:
    def __init__(
        self,
        config: Config,
        pipeline: Pipeline,
        spool: Spool,
        delivery: DeliveryNotifier,
        quarantine: QuarantineSink,
        verifier: RecipientChecker | None = None,
        greylist: Greylist | None = None,
    ) -> None:
        self.config = config
        self.handler = SmtpHandler(
            config, pipeline, spool, delivery, quarantine, verifier, greylist
        )
        smtp = config.smtp
        self.limiter = ConnectionLimiter(
            smtp.max_connections,
            smtp.max_connections_per_ip,
            math.ceil(smtp.stress_at * smtp.max_connections),
            smtp.ipv6_prefix_length,
            on_stress=self._stress_began,
        )
        self.message_memory = self.handler.message_memory
        self.tls_context = tls_context(config.smtp)
        self.sessions: set[GatewaySMTP] = set()
        self._server: asyncio.Server | None = None
        self._all_ended = asyncio.Event()
        self._backstop_s = (
            config.smtp.session_timeout_s + config.pipeline.deadline_s + BACKSTOP_SLACK_S
        )

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Accept on `sock` (already bound and listening) or on `[smtp] listen`; the address."""
        if sock is None:
            sock = bind_listener(self.config.smtp.listen, reuse_port=False)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_session, sock=sock, backlog=LISTEN_BACKLOG
        )
        host, port = sock.getsockname()[:2]
        log.info("SMTP front end listening on %s port %d", host, port)
        return str(host), int(port)

    def reload_tls(self) -> None:
        """SIGHUP: read the certificate and key again (a renewed certificate). Sessions from now
        on get the new pair; those already open keep theirs. A pair that does not load keeps
        the previous one, with an error in the log."""
        if self.tls_context is None:
            return
        try:
            fresh = tls_context(self.config.smtp)
        except GatewayError as exc:
            log.error("TLS certificate reload failed, keeping the previous one: %s", exc)
            return
        self.tls_context = fresh
        log.info("TLS certificate reloaded from %s", self.config.smtp.tls_cert)

    def _new_session(self) -> GatewaySMTP:
        return GatewaySMTP(
            self.config.smtp,
            self.handler,
            self.limiter,
            self,
            self.tls_context,
            self._backstop_s,
        )

    def _stress_began(self) -> None:
        """Reads already waiting get the short timeout too: a slowloris that opened its
        connections before the worker came under stress would otherwise keep them all."""
        for session in self.sessions:
            session.stress_began()

    def session_started(self, session: GatewaySMTP) -> None:
        self.sessions.add(session)
        self._all_ended.clear()

    def session_ended(self, session: GatewaySMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._all_ended.set()

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop accepting; idle sessions get 421 now, busy ones (e.g. in DATA) may finish
        their current command within `drain_timeout_s`; then every connection is closed."""
        if self._server is None:
            return
        self._server.close()
        for session in list(self.sessions):
            session.request_shutdown()
        if self.sessions:
            try:
                async with asyncio.timeout(drain_timeout_s):
                    await self._all_ended.wait()
            except TimeoutError:
                log.warning(
                    "%d SMTP sessions still busy at shutdown: closing them", len(self.sessions)
                )
                for session in list(self.sessions):
                    session.abort()
        await self._server.wait_closed()
        self._server = None
        await asyncio.to_thread(self.handler.committer.close)
