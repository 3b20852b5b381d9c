"""SPF through our wrapper and Resolver against zones on the loopback DNS server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from gateway.checks.spf import SpfCheck, evaluate_spf
from gateway.config import SHIPPED_RULES_DIR
from gateway.model import Action, Connection, Envelope, Phase, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.engine import PhaseOutcome, Pipeline
from gateway.pipeline.scoring import ForcedAction, load_policy
from tests.support.dns_server import DnsTestServer

ZONE = {
    "@": {"TXT": ["v=spf1 ip4:192.0.2.0/24 ip6:2001:db8:1::/48 -all"], "A": ["198.51.100.1"]},
    "a": {"TXT": ["v=spf1 a -all"], "A": ["198.51.100.2"]},
    "mx": {"TXT": ["v=spf1 mx/30 -all"], "MX": ["10 mail.mx", "20 backup.mx"]},
    "mail.mx": {"A": ["198.51.100.8"]},
    "backup.mx": {"AAAA": ["2001:db8:2::25"]},
    "inc": {"TXT": ["v=spf1 include:a.example.test include:example.test ~all"]},
    "redir": {"TXT": ["v=spf1 redirect=a.example.test"]},
    "exists": {"TXT": ["v=spf1 exists:%{ir}.%{l}._spf.example.test -all"]},
    "2.113.0.203.alice._spf": {"A": ["127.0.0.2"]},
    "macro": {"TXT": ["v=spf1 a:%{d2}.hosts.example.test -all"]},
    "example.test.hosts": {"A": ["203.0.113.77"]},
    "soft": {"TXT": ["v=spf1 ?ip4:203.0.113.0/24 ~all"]},
    "neutral": {"TXT": ["v=spf1 ?all"]},
    "toomany": {"TXT": ["v=spf1 " + " ".join(f"a:h{i}.example.test" for i in range(11)) + " -all"]},
    "void": {"TXT": ["v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test -all"]},
    "syntax": {"TXT": ["v=spf1 ip4:300.1.1.1 -all"]},
    "unknownmech": {"TXT": ["v=spf1 foo:bar -all"]},
    "two": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
    "helo": {"TXT": ["v=spf1 ip4:192.0.2.99 -all"]},
    "slow": {"TXT": ["v=spf1 include:timeout.example.test -all"]},
    **{f"h{i}": {"A": ["192.0.2.250"]} for i in range(11)},
}


@pytest.fixture
def resolver(dns_server: DnsTestServer) -> Resolver:
    dns_server.set_zone("example.test", ZONE)
    return Resolver([dns_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=100)


@pytest.mark.parametrize(
    ("sender", "ip", "expected"),
    [
        ("bob@example.test", "192.0.2.10", "pass"),  # ip4 range
        ("bob@example.test", "2001:db8:1::5", "pass"),  # ip6 range
        ("bob@example.test", "203.0.113.1", "fail"),
        ("bob@a.example.test", "198.51.100.2", "pass"),  # a
        ("bob@mx.example.test", "198.51.100.9", "pass"),  # mx with /30
        ("bob@mx.example.test", "198.51.100.20", "fail"),
        ("bob@inc.example.test", "198.51.100.2", "pass"),  # include (first)
        ("bob@inc.example.test", "192.0.2.1", "pass"),  # include (second)
        ("bob@inc.example.test", "203.0.113.1", "softfail"),
        ("bob@redir.example.test", "198.51.100.2", "pass"),  # redirect
        ("bob@redir.example.test", "203.0.113.1", "fail"),
        ("alice@exists.example.test", "203.0.113.2", "pass"),  # exists + %{ir}, %{l} macros
        ("mallory@exists.example.test", "203.0.113.2", "fail"),
        ("bob@macro.example.test", "203.0.113.77", "pass"),  # %{d2} macro
        ("bob@soft.example.test", "198.51.100.1", "softfail"),
        ("bob@soft.example.test", "203.0.113.5", "neutral"),
        ("bob@neutral.example.test", "203.0.113.5", "neutral"),
        ("bob@nospf.example.test", "203.0.113.5", "none"),  # NXDOMAIN: no record
        ("bob@mail.mx.example.test", "203.0.113.5", "none"),  # name exists, no TXT
        ("bob@toomany.example.test", "203.0.113.5", "permerror"),  # 11 lookups > 10
        ("bob@void.example.test", "203.0.113.5", "permerror"),  # 3 void lookups > 2
        ("bob@syntax.example.test", "203.0.113.5", "permerror"),
        ("bob@unknownmech.example.test", "203.0.113.5", "permerror"),
        ("bob@two.example.test", "203.0.113.5", "permerror"),  # two v=spf1 records
    ],
)
def test_spf_results(resolver: Resolver, sender: str, ip: str, expected: str) -> None:
    facts = evaluate_spf(resolver, ip, sender, "client.example.org", dns_time_s=2.0)
    assert facts.result == expected, facts.explanation
    assert facts.identity == "mailfrom"
    assert facts.domain == sender.partition("@")[2]


def test_null_sender_checks_the_helo_name(resolver: Resolver) -> None:
    facts = evaluate_spf(resolver, "192.0.2.99", "", "helo.example.test", dns_time_s=2.0)
    assert (facts.result, facts.identity, facts.domain) == ("pass", "helo", "helo.example.test")


def test_dns_timeout_is_temperror_within_the_bound(
    dns_server: DnsTestServer, resolver: Resolver
) -> None:
    dns_server.drop.add(("timeout.example.test", "*"))
    started = time.monotonic()
    facts = evaluate_spf(resolver, "192.0.2.1", "bob@slow.example.test", "x.test", dns_time_s=1)
    assert facts.result == "temperror"
    assert "no answer in time" in facts.explanation
    assert time.monotonic() - started < 1.5


def test_server_failure_is_temperror(dns_server: DnsTestServer, resolver: Resolver) -> None:
    dns_server.mode = "servfail"
    facts = evaluate_spf(resolver, "192.0.2.1", "bob@example.test", "x.test", dns_time_s=1)
    assert facts.result == "temperror"
    assert "SERVFAIL" in facts.explanation


def _tx(ip: str, sender: str, helo: str) -> Transaction:
    connection = Connection(id="c1", client_ip=ip, helo=helo)
    return Transaction("t1", connection, Envelope(sender, ("rcpt@example.org",)))


def test_check_reports_symbol_with_reason_and_facts(resolver: Resolver) -> None:
    check = SpfCheck(resolver, dns_time_s=2.0)
    assert check.phase == Phase.MAIL
    result = asyncio.run(check.run(_tx("203.0.113.1", "bob@example.test", "mx.example.org")))
    (symbol,) = result.symbols
    assert symbol.name == "SPF_FAIL"
    assert "mailfrom=example.test ip=203.0.113.1" in symbol.reason
    assert result.facts is not None and result.facts.result == "fail"  # type: ignore[attr-defined]


def test_check_without_any_identity_is_none(resolver: Resolver) -> None:
    result = asyncio.run(SpfCheck(resolver, 2.0).run(_tx("192.0.2.1", "", "")))
    assert [s.name for s in result.symbols] == ["SPF_NONE"]


def _mail_phase(resolver: Resolver, tx: Transaction) -> PhaseOutcome:
    pipeline = Pipeline([SpfCheck(resolver, 1.0, 2.0)], load_policy(SHIPPED_RULES_DIR), 5.0)
    return asyncio.run(pipeline.run_phase(Phase.MAIL, tx))


def test_shipped_policy_scores_fail_and_defers_temperror_at_mail_from(
    dns_server: DnsTestServer, resolver: Resolver
) -> None:
    failed = _mail_phase(resolver, _tx("203.0.113.1", "bob@example.test", "x.test"))
    assert not failed.stop  # SPF fail alone is not rejected at MAIL FROM (actions.toml)
    assert failed.verdict.symbol_names() == ["SPF_FAIL"]
    dns_server.mode = "drop"  # a domain not in the resolver's cache yet
    deferred = _mail_phase(resolver, _tx("203.0.113.1", "bob@soft.example.test", "x.test"))
    assert deferred.stop
    assert deferred.verdict.action == Action.TEMPFAIL
    assert deferred.verdict.reply is not None
    assert deferred.verdict.reply.startswith("451 4.4.3 SPF temporary error")


def test_spf_fail_rejection_when_the_admin_enables_it(resolver: Resolver) -> None:
    policy = load_policy(SHIPPED_RULES_DIR)
    reply = "550 5.7.23 SPF validation failed: {reason}"
    forced = {**policy.forced, "SPF_FAIL": ForcedAction(Action.REJECT, reply)}
    pipeline = Pipeline([SpfCheck(resolver, 1.0, 2.0)], replace(policy, forced=forced), 5.0)
    tx = _tx("203.0.113.1", "bob@example.test", "x.test")
    outcome = asyncio.run(pipeline.run_phase(Phase.MAIL, tx))
    assert outcome.stop
    assert outcome.verdict.reply == (
        "550 5.7.23 SPF validation failed: mailfrom=example.test ip=203.0.113.1: "
        "SPF fail - not authorized"
    )


def test_a_check_that_runs_out_of_time_is_a_temperror_deferred_at_mail_from(
    dns_server: DnsTestServer, resolver: Resolver
) -> None:
    # The check's own time ends before pyspf's DNS bound does (or the wait for a thread took
    # it): that is RFC 7208's temperror, 451 at MAIL FROM, not an SPF_ERROR scored 0.
    dns_server.drop.add(("timeout.example.test", "*"))
    check = SpfCheck(resolver, dns_time_s=5.0, timeout_s=0.25)
    pipeline = Pipeline([check], load_policy(SHIPPED_RULES_DIR), 5.0)
    tx = _tx("192.0.2.1", "bob@slow.example.test", "x.test")
    outcome = asyncio.run(pipeline.run_phase(Phase.MAIL, tx))
    assert outcome.verdict.symbol_names() == ["SPF_TEMPERROR"]
    assert "mailfrom=slow.example.test" in outcome.verdict.symbols[0].reason
    assert "timed out after" in outcome.verdict.symbols[0].reason
    assert outcome.verdict.action == Action.TEMPFAIL
    facts = outcome.tx.facts("spf")
    assert facts is not None and facts.result == "temperror"  # type: ignore[attr-defined]


def test_temperror_at_data_leaves_the_deferral_to_dmarc(
    dns_server: DnsTestServer, resolver: Resolver
) -> None:
    dns_server.mode = "drop"
    check = SpfCheck(resolver, 1.0, 2.0, temperror_at="data")
    pipeline = Pipeline([check], load_policy(SHIPPED_RULES_DIR), 5.0)
    tx = _tx("203.0.113.1", "bob@soft.example.test", "x.test")
    outcome = asyncio.run(pipeline.run_phase(Phase.MAIL, tx))
    assert outcome.verdict.symbol_names() == ["SPF_TEMPERROR_DEFERRED"]
    assert not outcome.stop
