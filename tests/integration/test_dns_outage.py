"""A resolver that swallows every query (issue 22 item 2): a session waits for DNS once, not in
each SMTP phase; once the breaker is open a new session waits for none; the breaker's own probe
of the resolver (not a sender's lookup) finds it back. Real DNS server on loopback in "drop"
mode; a tarpitting sender domain alone never opens the breaker."""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR, config_from_dict
from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from gateway.runtime import build_pipeline
from gateway.scan import ScanEnvelope, scan_files
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory

TIMEOUT_S = 0.5  # one query
LIFETIME_S = 1.0  # one lookup, retries included (dnspython sleeps 0.2 s of backoff past it)
LOOKUP_S = LIFETIME_S + 0.2
OPEN_S = 2.0
SLACK_S = 0.4  # a loaded machine's scheduling
ZONES = """
[zone.one]
zone = "one.bl.test"
kind = "ip"
[zone.one.answers]
"127.0.0.2" = "DNSBL_SPAMHAUS_SBL"
[zone.two]
zone = "two.bl.test"
kind = "ip"
[zone.two.answers]
"127.0.0.2" = "DNSBL_SPAMHAUS_SBL"
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in SHIPPED_RULES_DIR.glob("*.toml"):
        (rules / path.name).write_bytes(path.read_bytes())
    (rules / "dnsbl.toml").write_text(ZONES)
    return rules


def timed_session(host: str, port: int) -> tuple[float, float, int]:
    """(seconds to the banner, seconds for the reply to MAIL, its code)."""
    began = time.monotonic()
    with smtplib.SMTP(host, port, timeout=15) as smtp:
        banner_s = time.monotonic() - began
        smtp.ehlo("client.test")
        began = time.monotonic()
        code, _ = smtp.mail("alice@sender.test")
        return banner_s, time.monotonic() - began, code


def test_a_dead_resolver_costs_a_session_one_wait_and_new_sessions_none(
    gateway_factory: GatewayFactory, rules_dir: Path, dns_server: DnsTestServer
) -> None:
    dns_server.mode = "drop"
    resolver = Resolver(
        [dns_server.address], TIMEOUT_S, LIFETIME_S, 1000, breaker_timeouts=2, breaker_open_s=OPEN_S
    )
    gateway = gateway_factory(
        {
            "pipeline": {"rules_dir": str(rules_dir)},
            "checks": {"dnsbl": {"enabled": True, "skip_networks": []}, "spf": {"enabled": True}},
        },
        services=Services(resolver=resolver),
    )
    host, port = gateway.host, gateway.port

    # The first session: its two DNSBL lookups at connect wait one query's timeout (a DNS
    # list is asked once: it fails open) and make the breaker probe the resolver; MAIL's SPF
    # is not asked (the session's own lookups timed out). The banner waits timeout_s at most.
    banner_s, mail_s, code = timed_session(host, port)
    assert TIMEOUT_S - 0.1 < banner_s < TIMEOUT_S + SLACK_S
    # MAIL waits for the probe's word (one query's timeout at most), then fails at once.
    assert (code, mail_s < TIMEOUT_S + SLACK_S) == (451, True)
    _wait_for(lambda: resolver.breaker.is_open, TIMEOUT_S + SLACK_S)  # the probe timed out too
    assert resolver.breaker.counts["opened"] == 1

    # While it is open, a new session waits for nothing, and gets its 451 at once.
    banner_s, mail_s, code = timed_session(host, port)
    assert (banner_s < SLACK_S, mail_s < SLACK_S, code) == (True, True, 451)

    # After open_s the next lookup sets off another probe and still fails at once: no session
    # waits for a dead resolver again.
    time.sleep(OPEN_S)
    banner_s, mail_s, code = timed_session(host, port)
    assert (banner_s < SLACK_S, mail_s < SLACK_S, code) == (True, True, 451)
    _wait_for(lambda: resolver.breaker.counts["probes"] == 2, TIMEOUT_S + SLACK_S)

    # The resolver is back: the next probe finds it, and mail flows again.
    dns_server.mode = "answer"
    dns_server.set_zone(".", {"sender.test": {"TXT": ["v=spf1 ?all"]}})
    time.sleep(OPEN_S)
    timed_session(host, port)  # sets off the probe
    _wait_for(lambda: not resolver.breaker.is_open, TIMEOUT_S + SLACK_S)
    banner_s, mail_s, code = timed_session(host, port)
    assert code == 250


def test_a_tarpitting_sender_domain_never_opens_the_breaker(
    gateway_factory: GatewayFactory, dns_server: DnsTestServer
) -> None:
    # The resolver answers; only the sender's own domains never do (their name servers
    # tarpit). Before the probe, 2 such MAILs opened the breaker and every other sender's mail
    # was deferred for breaker_open_s.
    dns_server.set_zone("legit.test", {"@": {"TXT": ["v=spf1 ?all"]}})
    resolver = Resolver(
        [dns_server.address], TIMEOUT_S, LIFETIME_S, 0, breaker_timeouts=2, breaker_open_s=60.0
    )
    gateway = gateway_factory(
        {"checks": {"spf": {"enabled": True}}}, services=Services(resolver=resolver)
    )
    for n in range(3):
        dns_server.drop.add((f"s{n}.tarpit.test", "*"))
        with smtplib.SMTP(gateway.host, gateway.port, timeout=15) as smtp:
            smtp.ehlo("client.test")
            assert smtp.mail(f"x@s{n}.tarpit.test")[0] == 451
    _wait_for(lambda: resolver.breaker.counts["probes"] >= 1, TIMEOUT_S + SLACK_S)
    time.sleep(TIMEOUT_S)  # a probe that would time out has done so
    assert not resolver.breaker.is_open
    with smtplib.SMTP(gateway.host, gateway.port, timeout=15) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("alice@legit.test")[0] == 250


def _wait_for(condition: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)


def test_scan_of_a_message_waits_for_one_lookup_not_each(
    tmp_path: Path, dns_server: DnsTestServer
) -> None:
    dns_server.mode = "drop"
    config = config_from_dict(
        {
            "relay": {"domains": ["example.test"]},
            "storage": {"dir": str(tmp_path / "var")},
            "dns": {
                "nameservers": [dns_server.address],
                "timeout_s": TIMEOUT_S,
                "lifetime_s": LIFETIME_S,
                "breaker_timeouts": 0,  # only the message's own scope: each file waits once
            },
            "checks": {"antivirus": {"enabled": False}},
        }
    )
    message = tmp_path / "signed.eml"
    message.write_bytes(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=sel; h=from; bh=eA==; b=eQ==\r\n"
        b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\nSubject: hi\r\n"
        b"Date: Tue, 08 Dec 2026 04:00:00 +0000\r\nMessage-ID: <1@sender.test>\r\n\r\n"
        b"See http://www.sender.test/offer\r\n"
    )
    envelope = ScanEnvelope("203.0.113.9", "mail.sender.test", "alice@sender.test", ("b@x.test",))

    async def scan() -> tuple[float, list[str]]:
        pipeline = build_pipeline(config)
        try:
            began = time.monotonic()
            outputs = await scan_files(pipeline, [str(message), str(message)], envelope, True)
            return time.monotonic() - began, [o.text for o in outputs]
        finally:
            await pipeline.close()

    elapsed_s, outputs = asyncio.run(asyncio.wait_for(scan(), 60))
    # Two files, each: its first lookups wait one lifetime together, the rest fail at once.
    assert elapsed_s < 2 * LOOKUP_S + SLACK_S, elapsed_s
    assert all("TEMPERROR" in text for text in outputs)
