"""A client listed on a DNSBL is refused at connect by the real SMTP front end; an unlisted one
is greeted, and a listed IP with only a score is greeted too (thresholds apply at DATA)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR
from gateway.net.dns import Resolver
from gateway.pipeline.registry import Services
from tests.support.dns_server import DnsTestServer
from tests.support.gateway_fixture import GatewayFactory

ZONES = """
[zone.test]
zone = "bl.test"
kind = "ip"
[zone.test.answers]
"127.0.0.2" = "DNSBL_SPAMHAUS_SBL"
"127.0.0.10" = "DNSBL_SPAMHAUS_PBL"
"""
FORCED = """
[forced.DNSBL_SPAMHAUS_SBL]
action = "reject"
reply = "554 5.7.1 Service unavailable; {reason}"
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in SHIPPED_RULES_DIR.glob("*.toml"):
        (rules / path.name).write_bytes(path.read_bytes())
    (rules / "dnsbl.toml").write_text(ZONES)
    with (rules / "actions.toml").open("a") as actions:
        actions.write(FORCED)
    return rules


def start(factory: GatewayFactory, rules_dir: Path, resolver: Resolver) -> tuple[str, int]:
    gateway = factory(
        {
            "pipeline": {"rules_dir": str(rules_dir)},
            "checks": {"dnsbl": {"enabled": True, "skip_networks": []}},  # the client is 127.0.0.1
        },
        services=Services(resolver=resolver),
    )
    return gateway.host, gateway.port


def test_listed_client_gets_554_with_the_list_name(
    gateway_factory: GatewayFactory,
    rules_dir: Path,
    dns_server: DnsTestServer,
    dns_resolver: Resolver,
) -> None:
    dns_server.set_zone("bl.test", {"1.0.0.127": {"A": ["127.0.0.2"]}})
    host, port = start(gateway_factory, rules_dir, dns_resolver)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(host, port, timeout=10)
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error.decode() == (
        "5.7.1 Service unavailable; ip=127.0.0.1 listed by bl.test (127.0.0.2)"
    )


def test_a_configured_550_at_connect_still_refuses(
    gateway_factory: GatewayFactory,
    rules_dir: Path,
    dns_server: DnsTestServer,
    dns_resolver: Resolver,
) -> None:
    # Only 421 and 554 close a greeting; a configured 550 on a reject used to become a 421,
    # which makes the client retry for ever.
    actions = rules_dir / "actions.toml"
    actions.write_text(actions.read_text().replace('reply = "554 5.7.1', 'reply = "550 5.7.1'))
    dns_server.set_zone("bl.test", {"1.0.0.127": {"A": ["127.0.0.2"]}})
    host, port = start(gateway_factory, rules_dir, dns_resolver)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(host, port, timeout=10)
    assert refused.value.smtp_code == 554


@pytest.mark.parametrize("answers", [{}, {"1.0.0.127": {"A": ["127.0.0.10"]}}])
def test_unlisted_or_only_scored_client_is_greeted(
    gateway_factory: GatewayFactory,
    rules_dir: Path,
    dns_server: DnsTestServer,
    dns_resolver: Resolver,
    answers: dict[str, dict[str, list[str]]],
) -> None:
    dns_server.set_zone("bl.test", answers or {"other": {"A": ["127.0.0.2"]}})
    host, port = start(gateway_factory, rules_dir, dns_resolver)
    with smtplib.SMTP(host, port, timeout=10) as client:
        assert client.noop()[0] == 250
    assert ("1.0.0.127.bl.test", "A") in dns_server.queries


def test_listed_client_refused_at_rcpt_when_configured(
    gateway_factory: GatewayFactory,
    rules_dir: Path,
    dns_server: DnsTestServer,
    dns_resolver: Resolver,
) -> None:
    dns_server.set_zone("bl.test", {"1.0.0.127": {"A": ["127.0.0.2"]}})
    gateway = gateway_factory(
        {
            "pipeline": {"rules_dir": str(rules_dir)},
            "checks": {"dnsbl": {"enabled": True, "skip_networks": [], "phase": "rcpt"}},
        },
        services=Services(resolver=dns_resolver),
    )
    with smtplib.SMTP(gateway.host, gateway.port, timeout=10) as client:
        assert client.ehlo("client.test")[0] == 250
        assert client.mail("sender@example.org")[0] == 250
        code, text = client.rcpt("bob@example.test")
    assert code == 554
    assert text.decode() == "5.7.1 Service unavailable; ip=127.0.0.1 listed by bl.test (127.0.0.2)"
