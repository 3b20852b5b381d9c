"""STARTTLS: offered only with a certificate, works with smtplib, and plaintext pipelined after
STARTTLS is discarded (CVE-2011-0411 class)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.smtp import replies
from tests.support.downstream import make_self_signed_cert
from tests.support.gateway_fixture import GatewayFactory, RunningGateway
from tests.support.smtp_client import RawSmtp

MESSAGE = b"From: a@sender.test\r\nTo: bob@example.test\r\nSubject: x\r\n\r\nbody\r\n"


@pytest.fixture
def tls_gateway(gateway_factory: GatewayFactory, tmp_path: Path) -> RunningGateway:
    cert, key = make_self_signed_cert(tmp_path)
    return gateway_factory({"smtp": {"tls_cert": str(cert), "tls_key": str(key)}})


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_starttls_with_smtplib(tls_gateway: RunningGateway) -> None:
    with tls_gateway.client() as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        code, text = smtp.starttls(context=client_context())
        assert (code, text) == (220, replies.STARTTLS_READY[4:].encode())
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        smtp.sendmail("a@sender.test", ["bob@example.test"], MESSAGE)
    [msg_id] = tls_gateway.spool.ids()
    assert b" with ESMTPS id " + msg_id.encode() in tls_gateway.spool.read_data(msg_id)


def test_plaintext_pipelined_after_starttls_is_discarded(tls_gateway: RunningGateway) -> None:
    with RawSmtp(tls_gateway.host, tls_gateway.port) as client:
        client.greet()
        client.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        assert client.reply() == replies.STARTTLS_READY
        client.start_tls()
        # The session restarted: HELO is forgotten, and the injected MAIL never happened.
        assert client.command("MAIL FROM:<a@sender.test>") == replies.NEED_HELO
        client.command("EHLO client.test")
        assert client.command("RCPT TO:<bob@example.test>") == replies.NEED_MAIL
        assert client.command("STARTTLS") == replies.ALREADY_TLS


def test_failed_handshake_closes_only_that_session(tls_gateway: RunningGateway) -> None:
    with RawSmtp(tls_gateway.host, tls_gateway.port) as client:
        client.greet()
        assert client.command("STARTTLS") == replies.STARTTLS_READY
        client.send(b"this is not a TLS client hello\r\n" * 4)
        assert client.closed_by_server()
    with tls_gateway.client() as smtp:
        assert smtp.noop()[0] == 250
