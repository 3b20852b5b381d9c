"""Issue 22 item 3b: where an SPF temperror is acted on, over SMTP against the real gateway.

[checks.spf] temperror_at = "mail" (the default) defers at MAIL FROM, even for mail whose
DKIM signature alone would make DMARC pass. "data" receives the message and lets DMARC decide
at the end of DATA: an aligned DKIM pass goes on, anything else gets 451.
"""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from tests.support.dkim_keys import dkim_sign, rsa_key
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory, RunningGateway, only_checks

SENDER_IP = "127.0.0.4"  # not in legit.test's SPF record: only DKIM can vouch


def _message() -> bytes:
    return (
        b"From: Alice <alice@legit.test>\r\nTo: bob@example.test\r\nSubject: order 4711\r\n"
        b"Date: Tue, 08 Dec 2026 03:00:00 +0000\r\nMessage-ID: <4711@legit.test>\r\n\r\n"
        b"The order ships tomorrow.\r\n"
    )


def _gateway(
    dns_server: DnsTestServer, gateway_factory: GatewayFactory, temperror_at: str
) -> RunningGateway:
    dns_server.set_zone(
        "legit.test",
        {
            "@": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
            "_dmarc": {"TXT": ["v=DMARC1; p=reject"]},
            "rsa._domainkey": {"TXT": [rsa_key().txt()]},
        },
    )
    dns_server.drop.add(("legit.test", "TXT"))  # the SPF record never comes: temperror
    resolver = Resolver([dns_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=0)
    checks: dict[str, Any] = {
        **only_checks("headers", "spf", "dkim", "arc", "dmarc"),
        "spf": {"enabled": True, "timeout_s": 2.0, "dns_time_s": 0.8, "temperror_at": temperror_at},
    }
    overrides = {"dns": {"nameservers": [dns_server.address]}, "checks": checks}
    return gateway_factory(overrides, services=Services(resolver=resolver))


def _send(gw: RunningGateway, message: bytes) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """(MAIL FROM reply, end of DATA reply or (0, b"") when MAIL FROM was refused)."""
    with smtplib.SMTP(
        gw.host,
        gw.port,
        local_hostname="mail.legit.test",
        timeout=10.0,
        source_address=(SENDER_IP, 0),
    ) as smtp:
        smtp.ehlo()
        mail = smtp.mail("alice@legit.test")
        if mail[0] != 250:
            return mail, (0, b"")
        assert smtp.rcpt("bob@example.test")[0] == 250
        return mail, smtp.data(message)


def test_by_default_an_spf_temperror_defers_at_mail_from_even_with_dkim(
    dns_server: DnsTestServer, gateway_factory: GatewayFactory
) -> None:
    gw = _gateway(dns_server, gateway_factory, "mail")
    signed = dkim_sign(_message(), rsa_key(), "legit.test", "rsa")
    (code, reply), _ = _send(gw, signed)
    assert code == 451 and reply.startswith(b"4.4.3 SPF temporary error"), reply
    assert gw.spool.ids() == []


@pytest.mark.parametrize("signed", [True, False])
def test_temperror_at_data_accepts_an_aligned_dkim_pass_and_defers_the_rest(
    dns_server: DnsTestServer, gateway_factory: GatewayFactory, signed: bool
) -> None:
    gw = _gateway(dns_server, gateway_factory, "data")
    raw = dkim_sign(_message(), rsa_key(), "legit.test", "rsa") if signed else _message()
    (mail_code, _), (code, reply) = _send(gw, raw)
    assert mail_code == 250
    if signed:
        assert (code, reply[:5]) == (250, b"2.0.0"), reply
        assert len(gw.spool.ids()) == 1
    else:
        assert code == 451 and reply.startswith(b"4.4.3 DMARC temporary error"), reply
        assert b"SPF temperror" in reply
        assert gw.spool.ids() == []
