"""DNSBL and URIBL/RHSBL against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from gateway.checks.dnsbl import DnsblCheck
from gateway.checks.uribl import UriblCheck
from gateway.config import DnsblCheckConfig, config_from_dict
from gateway.dnslists import Zone, ip_query_name
from gateway.model import Action, Connection, Envelope, Phase, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.engine import Pipeline
from gateway.pipeline.registry import Services, build_checks
from gateway.pipeline.scoring import ForcedAction, Policy, SymbolPolicy, Thresholds
from tests.support.dns_server import DnsTestServer

SKIP = DnsblCheckConfig().skip_networks
V6 = "2001:db8::25"


def reversed_name(ip: str) -> str:
    return ip_query_name(ip, "bl.test").removesuffix(".bl.test")


@pytest.fixture
def zones(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.set_zone(
        "bl.test",
        {
            reversed_name("192.0.2.2"): {"A": ["127.0.0.2"]},
            reversed_name("192.0.2.3"): {"A": ["127.0.0.2", "127.0.0.4"]},
            reversed_name("192.0.2.9"): {"A": ["127.0.0.9"]},  # mapped by "any"
            reversed_name("192.0.2.99"): {"A": ["198.51.100.1"]},  # NXDOMAIN redirection
            reversed_name("192.0.2.98"): {"A": ["127.255.255.254"]},  # Spamhaus: refused
            reversed_name("192.0.2.97"): {"A": ["127.0.0.1"]},  # this list's "refused"
            reversed_name(V6): {"A": ["127.0.0.2"]},
        },
    )
    dns_server.set_zone(
        "dbl.test",
        {
            "spam-domain.example": {"A": ["127.0.1.2"]},
            "phish.co.uk": {"A": ["127.0.1.4"]},
            "bad-sender.example": {"A": ["127.0.1.2"]},
        },
    )
    return dns_server


IP_ZONE = Zone(
    name="testbl",
    zone="bl.test",
    kind="ip",
    answers={
        "127.0.0.2": "DNSBL_TEST_SPAM",
        "127.0.0.4": "DNSBL_TEST_EXPLOIT",
        "any": "DNSBL_TEST_OTHER",
    },
    error_answers=frozenset({"127.0.0.1"}),
)
DOMAIN_ZONE = Zone(
    name="testdbl",
    zone="dbl.test",
    kind="domain",
    answers={"127.0.1.2": "URIBL_TEST_SPAM", "127.0.1.4": "URIBL_TEST_PHISH"},
)


def tx(ip: str = "192.0.2.1", sender: str = "a@sender.example", raw: bytes = b"") -> Transaction:
    return Transaction("t", Connection("t", ip), Envelope(sender, ("u@example.test",)), raw)


def dnsbl_symbols(check: DnsblCheck, ip: str) -> dict[str, str]:
    return {s.name: s.reason for s in asyncio.run(check.run(tx(ip))).symbols}


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("192.0.2.2", {"DNSBL_TEST_SPAM": "ip=192.0.2.2 listed by bl.test (127.0.0.2)"}),
        (
            "192.0.2.3",
            {
                "DNSBL_TEST_SPAM": "ip=192.0.2.3 listed by bl.test (127.0.0.2)",
                "DNSBL_TEST_EXPLOIT": "ip=192.0.2.3 listed by bl.test (127.0.0.4)",
            },
        ),
        ("192.0.2.9", {"DNSBL_TEST_OTHER": "ip=192.0.2.9 listed by bl.test (127.0.0.9)"}),
        ("192.0.2.1", {}),  # not listed: NXDOMAIN
        (V6, {"DNSBL_TEST_SPAM": f"ip={V6} listed by bl.test (127.0.0.2)"}),
        (
            "::ffff:192.0.2.2",
            {"DNSBL_TEST_SPAM": "ip=::ffff:192.0.2.2 listed by bl.test (127.0.0.2)"},
        ),
        (
            "192.0.2.99",
            {
                "DNSBL_ZONE_ERROR": "ip=192.0.2.99 zone=bl.test "
                "answer=198.51.100.1 (outside 127.0.0.0/8)"
            },
        ),
        (
            "192.0.2.98",
            {
                "DNSBL_ZONE_ERROR": "ip=192.0.2.98 zone=bl.test "
                "answer=127.255.255.254 (an error code of the list)"
            },
        ),
        (
            "192.0.2.97",
            {
                "DNSBL_ZONE_ERROR": "ip=192.0.2.97 zone=bl.test "
                "answer=127.0.0.1 (an error code of the list)"
            },
        ),
    ],
)
def test_ip_lookups(
    zones: DnsTestServer, dns_resolver: Resolver, ip: str, expected: dict[str, str]
) -> None:
    check = DnsblCheck([IP_ZONE], dns_resolver, skip_networks=SKIP)
    assert dnsbl_symbols(check, ip) == expected


def test_ipv6_is_queried_as_reversed_nibbles(zones: DnsTestServer, dns_resolver: Resolver) -> None:
    check = DnsblCheck([IP_ZONE], dns_resolver, skip_networks=SKIP)
    dnsbl_symbols(check, V6)
    nibbles = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    assert (f"{nibbles}.bl.test", "A") in zones.queries


def test_private_and_missing_client_addresses_are_not_looked_up(
    zones: DnsTestServer, dns_resolver: Resolver
) -> None:
    check = DnsblCheck([IP_ZONE], dns_resolver, skip_networks=SKIP)
    for ip in ("10.1.2.3", "127.0.0.1", "::1", "fd00::1", "::ffff:192.168.1.1", ""):
        assert dnsbl_symbols(check, ip) == {}
    assert zones.queries == []


def test_timeout_is_a_zone_error_and_a_failing_zone_is_paused(
    zones: DnsTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = Resolver([zones.address], timeout_s=0.1, lifetime_s=0.2, cache_entries=0)
    check = DnsblCheck([IP_ZONE], resolver, skip_networks=SKIP, failures_before_pause=2, pause_s=60)
    zones.mode = "drop"
    reason = dnsbl_symbols(check, "192.0.2.2")["DNSBL_ZONE_ERROR"]
    assert reason.startswith("ip=192.0.2.2 zone=bl.test") and "no answer in time" in reason
    zones.mode = "servfail"
    with caplog.at_level(logging.WARNING, logger="gateway.dnslists"):
        assert "SERVFAIL" in dnsbl_symbols(check, "192.0.2.2")["DNSBL_ZONE_ERROR"]
    assert "DNS list testbl (bl.test) paused for 60s after 2 failures in a row" in caplog.text
    zones.mode = "answer"
    zones.clear_queries()
    assert dnsbl_symbols(check, "192.0.2.2") == {
        "DNSBL_ZONE_ERROR": "ip=192.0.2.2 zone=bl.test paused after failures"
    }
    assert zones.queries == []  # a paused zone costs no lookup


def test_a_success_resets_the_failure_count(zones: DnsTestServer, dns_resolver: Resolver) -> None:
    check = DnsblCheck([IP_ZONE], dns_resolver, skip_networks=SKIP, failures_before_pause=2)
    assert "DNSBL_ZONE_ERROR" in dnsbl_symbols(check, "192.0.2.99")
    assert dnsbl_symbols(check, "192.0.2.1") == {}
    assert "DNSBL_ZONE_ERROR" in dnsbl_symbols(check, "192.0.2.99")
    assert not check.clients[0].paused


def test_a_listed_client_is_refused_at_connect(
    zones: DnsTestServer, dns_resolver: Resolver
) -> None:
    check = DnsblCheck([IP_ZONE], dns_resolver, skip_networks=SKIP)
    policy = Policy(
        symbols={name: SymbolPolicy(5.0) for name in check.all_symbols()},
        group_caps={},
        thresholds=Thresholds(6.0, 15.0),
        forced={
            "DNSBL_TEST_SPAM": ForcedAction(
                Action.REJECT, "554 5.7.1 Service unavailable; {reason}"
            )
        },
    )
    pipeline = Pipeline([check], policy, deadline_s=5.0)
    listed = asyncio.run(pipeline.run_phase(Phase.CONNECT, tx("192.0.2.2")))
    assert listed.stop and listed.verdict.action == Action.REJECT
    assert listed.verdict.reply == (
        "554 5.7.1 Service unavailable; ip=192.0.2.2 listed by bl.test (127.0.0.2)"
    )
    other = asyncio.run(pipeline.run_phase(Phase.CONNECT, tx("192.0.2.9")))
    assert not other.stop  # scored only: thresholds apply at DATA


HTML_MAIL = (
    b"From: Shop <offers@news.shop.example>\r\n"
    b"Subject: deals\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="x"\r\n\r\n'
    b"--x\r\nContent-Type: text/plain\r\n\r\nSee hxxp://www.spam-domain[.]example/offer\r\n"
    b"--x\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b'<a href=3D"https://login.phish.co.uk/?a=3D1&amp;b=3D2">Sign in</a>\r\n'
    b"--x--\r\n"
)


def uribl_symbols(check: UriblCheck, sender: str, raw: bytes) -> dict[str, str]:
    return {s.name: s.reason for s in asyncio.run(check.run(tx(sender=sender, raw=raw))).symbols}


def test_url_domains_are_looked_up(zones: DnsTestServer, dns_resolver: Resolver) -> None:
    check = UriblCheck([DOMAIN_ZONE], dns_resolver)
    assert uribl_symbols(check, "a@sender.example", HTML_MAIL) == {
        "URIBL_TEST_SPAM": "domain=spam-domain.example in=url listed by dbl.test (127.0.1.2)",
        "URIBL_TEST_PHISH": "domain=phish.co.uk in=url listed by dbl.test (127.0.1.4)",
    }
    queried = {name for name, _ in zones.queries}
    assert queried == {
        "sender.example.dbl.test",
        "shop.example.dbl.test",
        "phish.co.uk.dbl.test",
        "spam-domain.example.dbl.test",
    }


def test_sender_and_from_domains_on_rhsbl(zones: DnsTestServer, dns_resolver: Resolver) -> None:
    check = UriblCheck([DOMAIN_ZONE], dns_resolver)
    raw = b"From: x@mail.bad-sender.example\r\n\r\nno links\r\n"
    assert uribl_symbols(check, "bounce@bad-sender.example", raw) == {
        "URIBL_TEST_SPAM": "domain=bad-sender.example in=sender+from listed by dbl.test (127.0.1.2)"
    }
    url_only = UriblCheck([dataclasses.replace(DOMAIN_ZONE, domains=("url",))], dns_resolver)
    assert uribl_symbols(url_only, "bounce@bad-sender.example", raw) == {}


def test_domains_per_message_are_bounded(zones: DnsTestServer, dns_resolver: Resolver) -> None:
    links = " ".join(f"http://site{i}.example/" for i in range(50)).encode()
    check = UriblCheck([DOMAIN_ZONE], dns_resolver, max_domains=5)
    uribl_symbols(check, "", b"Subject: x\r\n\r\n" + links)
    assert len(zones.queries) == 5


def test_registry_builds_enabled_lists_only(tmp_path: Path, dns_resolver: Resolver) -> None:
    shipped = config_from_dict({})
    names = {c.name for c in build_checks(shipped, Services(resolver=dns_resolver))}
    assert {"rules", "lists"} <= names
    assert not {"dnsbl", "uribl"} & names  # every shipped list is disabled

    for path in shipped.rules_dir.glob("*.toml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "dnsbl.toml").write_text(
        '[zone.t]\nzone = "bl.test"\nkind = "ip"\n[zone.t.answers]\n"127.0.0.2" = "DNSBL_T"\n'
        '[zone.d]\nzone = "dbl.test"\nkind = "domain"\ndomains = ["url"]\n'
        '[zone.d.answers]\nany = "URIBL_D"\n'
    )
    config = config_from_dict({"pipeline": {"rules_dir": str(tmp_path)}})
    checks = {c.name: c for c in build_checks(config, Services(resolver=dns_resolver))}
    assert "DNSBL_T" in checks["dnsbl"].all_symbols()
    assert "URIBL_D" in checks["uribl"].all_symbols()
