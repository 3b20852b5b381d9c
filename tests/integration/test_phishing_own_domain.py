"""Mail claiming one of our own domains ([relay] domains) is judged on DMARC's verdict, read
from a real DNS server on loopback: a fail is BRAND_OWN_DOMAIN, a pass is our own mail."""

from __future__ import annotations

import asyncio

from gateway.checks.brands import BrandCheck
from gateway.checks.dkim import DkimCheck
from gateway.checks.dmarc import DmarcCheck
from gateway.checks.spf import SpfCheck
from gateway.config import SHIPPED_RULES_DIR
from gateway.model import Connection, Envelope, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.scoring import load_policy
from tests.support.dns_server import DnsTestServer

OUR_MTA = "192.0.2.10"
OUTSIDE = "203.0.113.66"
MESSAGE = (
    b'From: "IT Support" <it-support@example.org>\r\nTo: anna@example.org\r\n'
    b"Subject: Required: mailbox migration\r\nDate: Tue, 8 Dec 2026 04:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n\r\nValidate your account before Friday.\r\n"
)


def brand_symbols(server: DnsTestServer, ip: str) -> dict[str, str]:
    server.set_zone(
        "example.org",
        {
            "@": {"TXT": [f"v=spf1 ip4:{OUR_MTA} -all"]},
            "_dmarc": {"TXT": ["v=DMARC1; p=none"]},  # monitoring only: DMARC_FAIL scores 0-ish
        },
    )
    resolver = Resolver([server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=0)
    checks = [
        SpfCheck(resolver, dns_time_s=1.0, timeout_s=2.0),
        DkimCheck(resolver),
        DmarcCheck(resolver),
        BrandCheck(SHIPPED_RULES_DIR, ("example.org",)),
    ]
    pipeline = Pipeline(checks, load_policy(SHIPPED_RULES_DIR), deadline_s=5.0)
    connection = Connection(id="c1", client_ip=ip, helo="mail.example.org")
    envelope = Envelope("bounce@example.org", ("anna@example.org",))
    outcome = asyncio.run(pipeline.run_message(Transaction("tx", connection, envelope, MESSAGE)))
    return {s.name: s.reason for s in outcome.verdict.symbols if s.name.startswith("BRAND_")}


def test_our_domain_from_outside_with_dmarc_failing(dns_server: DnsTestServer) -> None:
    assert brand_symbols(dns_server, OUTSIDE) == {
        "BRAND_OWN_DOMAIN": "from=it-support@example.org dmarc=fail"
    }


def test_our_domain_from_our_own_server(dns_server: DnsTestServer) -> None:
    assert brand_symbols(dns_server, OUR_MTA) == {}
