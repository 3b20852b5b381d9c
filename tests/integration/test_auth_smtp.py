"""SPF, DKIM, ARC and DMARC in the real SMTP front end: replies on the wire, and the
Authentication-Results header on what is queued (a forged one naming us removed)."""

from __future__ import annotations

import smtplib

import pytest

from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from tests.support.dkim_keys import dkim_sign, rsa_key
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

AUTH = ("headers", "spf", "dkim", "arc", "dmarc")


def _message(from_address: str) -> bytes:
    return (
        f"From: {from_address}\r\nTo: bob@example.test\r\nSubject: payment\r\n"
        "Date: Sun, 29 Nov 2026 02:00:00 +0000\r\nMessage-ID: <7@sender.test>\r\n\r\n"
        "Please pay the attached invoice.\r\n"
    ).encode()


@pytest.fixture
def gateway(
    gateway_factory: GatewayFactory, dns_server: DnsTestServer, dns_resolver: Resolver
) -> RunningGateway:
    dns_server.set_zone(
        "sender.test",
        {
            "@": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},  # the test client connects from here
            "_dmarc": {"TXT": ["v=DMARC1; p=reject"]},
            "rsa._domainkey": {"TXT": [rsa_key().txt()]},
        },
    )
    dns_server.set_zone("other.test", {"@": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}})
    return gateway_factory({"checks": only_checks(*AUTH)}, services=Services(dns_resolver))


def test_dmarc_reject_spoof_gets_550_5_7_1_at_data(gateway: RunningGateway) -> None:
    with gateway.client() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("x@other.test", ["bob@example.test"], _message("ceo@sender.test"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode().startswith("5.7.1 Unauthenticated email")
    assert gateway.spool.ids() == []


def test_spf_dns_timeout_defers_at_mail_from(
    gateway: RunningGateway, dns_server: DnsTestServer
) -> None:
    dns_server.drop.add(("slow.test", "*"))
    with gateway.client() as client:
        client.ehlo("client.test")
        code, text = client.mail("x@slow.test")
    assert code == 451
    assert text.decode().startswith("4.4.3 SPF temporary error")


def test_accepted_mail_carries_our_results_and_not_a_forged_one(gateway: RunningGateway) -> None:
    forged = b"Authentication-Results: mx.gateway.test; dmarc=pass header.from=sender.test\r\n"
    signed = dkim_sign(_message("alice@sender.test"), rsa_key(), "sender.test", "rsa")
    with gateway.client() as client:
        client.sendmail("alice@sender.test", ["bob@example.test"], forged + signed)
    (queued,) = gateway.spool.ids()
    data = gateway.spool.read_data(queued)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert forged not in data
    assert head.count(b"Authentication-Results: mx.gateway.test;") == 1
    for result in (b"spf=pass", b"dkim=pass", b"arc=none", b"dmarc=pass"):
        assert result in head
    assert signed.split(b"\r\n\r\n", 1)[1] in data  # body untouched
