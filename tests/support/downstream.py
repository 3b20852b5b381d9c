"""A real, recording downstream SMTP server on 127.0.0.1 (the "internal mail server" of tests).

aiosmtpd runs on its own event loop in a thread, so it works under both sync and async tests.
It records every message with its envelope, can answer 4xx/5xx at RCPT or DATA (globally or per
recipient), can be slow, can stop and come back on the same port, can offer STARTTLS with a
self-signed certificate generated in the test, and can offer DSN (RFC 3461), which aiosmtpd
itself does not: its parameters are then accepted, and every MAIL and RCPT line is kept as it
came in `commands`.

    def test_x(downstream: Downstream) -> None:
        downstream.fail_rcpt("452 4.2.2 Mailbox full", rcpt="bob@example.test")
        ...
        [message] = downstream.wait_for(1)
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    mail_options: tuple[str, ...]
    rcpt_options: tuple[tuple[str, ...], ...]


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Write a fresh self-signed certificate + key (PEM) for hostname and 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler:
    def __init__(self, server: Downstream) -> None:
        self.server = server

    async def handle_EHLO(
        self, smtp: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.server.pipelining:  # aiosmtpd reads pipelined commands fine; it just never says so
            responses.insert(-1, "250-PIPELINING")
        if self.server.dsn:
            responses.insert(-1, "250-DSN")
        return responses

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.server.rcpt_commands += 1
        if self.server.delay_s:
            await asyncio.sleep(self.server.delay_s)
        reply = self.server._rcpt_replies.get(address.lower(), self.server._rcpt_replies.get(""))
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.delay_s:
            await asyncio.sleep(self.server.delay_s)
        if self.server._data_reply is not None:
            return self.server._data_reply
        content = envelope.original_content or b""
        message = ReceivedMessage(
            # aiosmtpd reports the null sender as "<>"; the gateway's model uses "".
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=content,
            tls=session.ssl is not None,
            mail_options=tuple(envelope.mail_options),
            rcpt_options=tuple(tuple(o) for o in envelope.rcpt_options),
        )
        with self.server._cond:
            self.server.messages.append(message)
            self.server._cond.notify_all()
        return "250 2.0.0 OK queued"


class Downstream:
    """The recording server. `start()` binds port 0 the first time and the same port after."""

    def __init__(
        self,
        tls_cert: tuple[Path, Path] | None = None,
        smtputf8: bool = True,
        host: str = "127.0.0.1",
        line_length_limit: int = 10_000,
        pipelining: bool = True,
        dsn: bool = False,
    ) -> None:
        self.host = host
        self.pipelining = pipelining
        self.dsn = dsn
        self.commands: list[str] = []  # MAIL and RCPT lines as received (arguments unchanged)
        self.line_length_limit = line_length_limit
        self.port = 0
        self.messages: list[ReceivedMessage] = []
        self.rcpt_commands = 0
        self.connections_made = 0
        self.delay_s = 0.0
        self.smtputf8 = smtputf8
        self._tls_context: ssl.SSLContext | None = None
        if tls_cert is not None:
            self._tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls_context.load_cert_chain(*tls_cert)
        self._rcpt_replies: dict[str, str] = {}
        self._data_reply: str | None = None
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[SMTP] = set()

    # -- behaviour -------------------------------------------------------------------------

    def fail_rcpt(self, reply: str, rcpt: str = "") -> None:
        """Answer RCPT with `reply` ("550 5.1.1 ...") for `rcpt`, or for everyone if ""."""
        self._rcpt_replies[rcpt.lower()] = reply

    def fail_data(self, reply: str) -> None:
        """Answer the end of DATA with `reply` instead of accepting."""
        self._data_reply = reply

    def behave(self) -> None:
        """Accept everything again."""
        self._rcpt_replies.clear()
        self._data_reply = None
        self.delay_s = 0.0

    # -- observing -------------------------------------------------------------------------

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least `count` messages arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"downstream got {len(self.messages)} messages, expected {count}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    async def wait_for_async(self, count: int, timeout_s: float = 10.0) -> list[ReceivedMessage]:
        return await asyncio.to_thread(self.wait_for, count, timeout_s)

    # -- lifecycle -------------------------------------------------------------------------

    def subjects(self) -> Counter[str]:
        """How often each Subject arrived: tests tag messages by subject to spot loss and
        duplicates."""
        found: Counter[str] = Counter()
        for received in list(self.messages):
            for line in received.data.split(b"\r\n"):
                if line.startswith(b"Subject: "):
                    found[line[9:].decode(errors="replace")] += 1
                    break
        return found

    def _factory(self) -> SMTP:
        server = self

        class _RecordingSMTP(SMTP):
            # Tolerant like real internal servers; aiosmtpd's default is RFC 5321's 1000.
            line_length_limit = server.line_length_limit

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server._sessions.add(self)
                server.connections_made += 1
                super().connection_made(transport)

            def connection_lost(self, error: Exception | None) -> None:
                server._sessions.discard(self)
                super().connection_lost(error)

            async def smtp_MAIL(self, arg: str | None) -> None:
                server.commands.append(f"MAIL {arg}")
                await super().smtp_MAIL(_without_dsn(arg) if server.dsn else arg)

            async def smtp_RCPT(self, arg: str | None) -> None:
                server.commands.append(f"RCPT {arg}")
                await super().smtp_RCPT(_without_dsn(arg) if server.dsn else arg)

        return _RecordingSMTP(
            _Handler(self),
            hostname="downstream.test",
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            tls_context=self._tls_context,
            require_starttls=False,
        )

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._factory, self.host, self.port, reuse_address=True)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="downstream-smtp", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S):
            raise RuntimeError("downstream SMTP server did not start")
        if failure:
            self._thread.join(START_TIMEOUT_S)
            self._thread = None
            raise failure[0]

    def stop(self) -> None:
        """Go away: stop listening and drop every open connection."""
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(START_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._thread = None
        self._loop = None
        self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()


_DSN_PARAMETERS = ("RET=", "ENVID=", "NOTIFY=", "ORCPT=")


def _without_dsn(arg: str | None) -> str | None:
    """The command's argument without DSN parameters, which aiosmtpd would refuse (555)."""
    if arg is None:
        return None
    return " ".join(w for w in arg.split(" ") if not w.upper().startswith(_DSN_PARAMETERS))


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    """A plain recording downstream (no STARTTLS, SMTPUTF8 offered)."""
    server = Downstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def downstream_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Downstream]:
    """A recording downstream that offers STARTTLS with a self-signed certificate."""
    cert = make_self_signed_cert(tmp_path_factory.mktemp("downstream-tls"))
    server = Downstream(tls_cert=cert)
    server.start()
    yield server
    server.stop()
