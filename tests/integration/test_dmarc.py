"""DMARC end to end: the real SPF, DKIM, ARC and DMARC checks in the pipeline with the shipped
rules, against zones on the loopback DNS server; plus the Authentication-Results they produce."""

from __future__ import annotations

import asyncio

import authres
import pytest

from gateway.authresults import authentication_results_field
from gateway.checks.arc import ArcCheck
from gateway.checks.dkim import DkimCheck
from gateway.checks.dmarc import DmarcCheck
from gateway.checks.spf import SpfCheck
from gateway.config import SHIPPED_RULES_DIR
from gateway.model import (
    Action,
    ArcFacts,
    CheckResult,
    Connection,
    DkimFacts,
    Envelope,
    Phase,
    SpfFacts,
    Symbol,
    Transaction,
)
from gateway.net.dns import Resolver
from gateway.pipeline.engine import PhaseOutcome, Pipeline
from gateway.pipeline.scoring import load_policy
from tests.support.dkim_keys import arc_seal, dkim_sign, rsa_key
from tests.support.dns_server import DnsTestServer

GOOD_IP = "192.0.2.10"  # in example.test's SPF record
BAD_IP = "203.0.113.66"
AUTHSERV_ID = "mx.gateway.test"


def _message(from_header: str = "Alice <alice@example.test>") -> bytes:
    return (
        f"From: {from_header}\r\nTo: bob@example.org\r\nSubject: invoice\r\n"
        "Date: Sun, 29 Nov 2026 02:00:00 +0000\r\nMessage-ID: <9@example.test>\r\n\r\n"
        "Please pay.\r\n"
    ).encode()


def _serve(server: DnsTestServer, dmarc: str | None, **extra: dict[str, list[str]]) -> None:
    zone: dict[str, dict[str, list[str]]] = {
        "@": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "news": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "rsa._domainkey": {"TXT": [rsa_key().txt()]},
        **extra,
    }
    if dmarc is not None:
        zone["_dmarc"] = {"TXT": [dmarc]}
    server.set_zone("example.test", zone)
    server.set_zone("forwarder.test", {"arc._domainkey": {"TXT": [rsa_key().txt()]}})


def _run(
    server: DnsTestServer,
    raw: bytes,
    ip: str = BAD_IP,
    sender: str = "alice@example.test",
    trusted: tuple[str, ...] = (),
    dkim_timeout_s: float = 10.0,
) -> PhaseOutcome:
    resolver = Resolver([server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=0)
    checks = [
        SpfCheck(resolver, dns_time_s=1.0, timeout_s=2.0),
        DkimCheck(resolver, timeout_s=dkim_timeout_s),
        ArcCheck(resolver),
        DmarcCheck(resolver, trusted_arc_sealers=trusted),
    ]
    pipeline = Pipeline(checks, load_policy(SHIPPED_RULES_DIR), deadline_s=5.0)
    connection = Connection(id="c1", client_ip=ip, helo="mail.sender.test")
    tx = Transaction("tx-1", connection, Envelope(sender, ("bob@example.org",)), raw)
    return asyncio.run(pipeline.run_message(tx))


def _dmarc_symbols(outcome: PhaseOutcome) -> list[str]:
    return [s.name for s in outcome.verdict.symbols if s.name.startswith("DMARC_")]


def test_p_reject_spoof_is_rejected_with_550_5_7_1(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _message())
    assert _dmarc_symbols(outcome) == ["DMARC_REJECT"]
    assert outcome.verdict.action == Action.REJECT
    assert outcome.verdict.reply is not None
    assert outcome.verdict.reply.startswith("550 5.7.1 ")
    assert "from=example.test" in outcome.verdict.reply


def test_p_quarantine_spoof_is_quarantined(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=quarantine")
    outcome = _run(dns_server, _message())
    assert _dmarc_symbols(outcome) == ["DMARC_QUARANTINE"]
    assert outcome.verdict.action == Action.QUARANTINE


def test_p_none_failure_is_only_scored(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=none; rua=mailto:d@example.test")
    outcome = _run(dns_server, _message())
    assert _dmarc_symbols(outcome) == ["DMARC_FAIL"]
    # Delivered, neither held nor refused; its score may mark it for the Junk folder (tag).
    assert outcome.verdict.action in (Action.ACCEPT, Action.TAG)


def test_pct_zero_applies_the_next_less_strict_policy(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject; pct=0")
    assert _dmarc_symbols(_run(dns_server, _message())) == ["DMARC_QUARANTINE"]


def test_aligned_spf_passes(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _message(), ip=GOOD_IP)
    assert _dmarc_symbols(outcome) == ["DMARC_PASS"]
    assert outcome.verdict.action == Action.ACCEPT


def test_aligned_dkim_passes_when_spf_fails(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    signed = dkim_sign(_message(), rsa_key(), "example.test", "rsa")
    outcome = _run(dns_server, signed, sender="bounce@other.test")
    assert _dmarc_symbols(outcome) == ["DMARC_PASS"]


@pytest.mark.parametrize(("adkim", "expected"), [("r", "DMARC_PASS"), ("s", "DMARC_REJECT")])
def test_relaxed_and_strict_dkim_alignment(
    dns_server: DnsTestServer, adkim: str, expected: str
) -> None:
    # From news.example.test, signed by example.test: same organisational domain only.
    _serve(dns_server, None, **{"_dmarc.news": {"TXT": [f"v=DMARC1; p=reject; adkim={adkim}"]}})
    raw = dkim_sign(_message("alice@news.example.test"), rsa_key(), "example.test", "rsa")
    assert _dmarc_symbols(_run(dns_server, raw, sender="x@other.test")) == [expected]


@pytest.mark.parametrize(("aspf", "expected"), [("r", "DMARC_PASS"), ("s", "DMARC_REJECT")])
def test_relaxed_and_strict_spf_alignment(
    dns_server: DnsTestServer, aspf: str, expected: str
) -> None:
    _serve(dns_server, None, **{"_dmarc.news": {"TXT": [f"v=DMARC1; p=reject; aspf={aspf}"]}})
    raw = _message("alice@news.example.test")
    outcome = _run(dns_server, raw, ip=GOOD_IP, sender="alice@example.test")
    assert _dmarc_symbols(outcome) == [expected]


def test_subdomain_policy_from_the_organisational_domain(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=none; sp=reject")
    assert _dmarc_symbols(_run(dns_server, _message("a@news.example.test"))) == ["DMARC_REJECT"]
    # The organisational domain itself gets p=.
    assert _dmarc_symbols(_run(dns_server, _message())) == ["DMARC_FAIL"]


def test_dns_timeout_on_the_record_with_an_exact_spf_pass_is_a_pass(
    dns_server: DnsTestServer,
) -> None:
    # SPF passed for the From domain itself: aligned under any record, nothing to defer.
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.drop.add(("_dmarc.example.test", "TXT"))
    outcome = _run(dns_server, _message(), ip=GOOD_IP)
    assert _dmarc_symbols(outcome) == ["DMARC_PASS"]
    assert outcome.verdict.action == Action.ACCEPT


def test_missing_record_is_none(dns_server: DnsTestServer) -> None:
    _serve(dns_server, None)
    outcome = _run(dns_server, _message())
    assert _dmarc_symbols(outcome) == ["DMARC_NONE"]
    assert outcome.verdict.action == Action.ACCEPT


@pytest.mark.parametrize("record", ["v=DMARC1; p=bogus", "v=DMARC1; adkim=s"])
def test_malformed_record_is_permerror(dns_server: DnsTestServer, record: str) -> None:
    _serve(dns_server, record)
    assert _dmarc_symbols(_run(dns_server, _message())) == ["DMARC_PERMERROR"]


def test_dns_timeout_on_the_record_defers(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.drop.add(("_dmarc.example.test", "TXT"))
    outcome = _run(dns_server, _message(), ip=BAD_IP)
    assert _dmarc_symbols(outcome) == ["DMARC_TEMPERROR"]
    assert outcome.verdict.action == Action.TEMPFAIL
    assert outcome.verdict.reply is not None and outcome.verdict.reply.startswith("451 4.4.3")


def test_aligned_dkim_key_timeout_is_temperror_not_reject(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.drop.add(("rsa._domainkey.example.test", "TXT"))
    signed = dkim_sign(_message(), rsa_key(), "example.test", "rsa")
    outcome = _run(dns_server, signed, sender="bounce@other.test")
    assert _dmarc_symbols(outcome) == ["DMARC_TEMPERROR"]
    assert outcome.verdict.action == Action.TEMPFAIL


@pytest.mark.parametrize(
    ("sender", "expected"),
    [("alice@example.test", "DMARC_TEMPERROR"), ("x@random.tarpit.test", "DMARC_REJECT")],
)
def test_a_failed_spf_check_is_not_read_as_no_pass(
    dns_server: DnsTestServer, sender: str, expected: str
) -> None:
    # pyspf refuses the client address: the SPF check fails (SPF_ERROR) and leaves no facts.
    # An envelope sender aligned with From might have passed: defer (451), never reject for
    # good; one that is not aligned could not have helped, so the policy still applies.
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _message(), ip="not-an-ip", sender=sender)
    assert "SPF_ERROR" in outcome.verdict.symbol_names()
    assert _dmarc_symbols(outcome) == [expected]
    if expected == "DMARC_TEMPERROR":
        assert outcome.verdict.action == Action.TEMPFAIL
        assert outcome.verdict.reply is not None and "spf check failed" in outcome.verdict.reply


@pytest.mark.parametrize(
    ("signer", "expected"), [("example.test", "DMARC_TEMPERROR"), ("other.test", "DMARC_REJECT")]
)
def test_a_dkim_check_that_timed_out_is_not_read_as_no_pass(
    dns_server: DnsTestServer, signer: str, expected: str
) -> None:
    # The key lookup outlasts the whole DKIM check: each signature is DKIM_TEMPERROR. One
    # whose d= aligns with From might have verified: defer; one from elsewhere could not help.
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.set_zone("other.test", {"rsa._domainkey": {"TXT": [rsa_key().txt()]}})
    dns_server.drop.add((f"rsa._domainkey.{signer}", "TXT"))
    signed = dkim_sign(_message(), rsa_key(), signer, "rsa")
    outcome = _run(dns_server, signed, sender="bounce@other.test", dkim_timeout_s=0.2)
    assert "DKIM_TEMPERROR" in outcome.verdict.symbol_names()
    assert _dmarc_symbols(outcome) == [expected]


@pytest.mark.parametrize("from_header", ["a@example.test, b@evil.test", "undisclosed-recipients:;"])
def test_not_exactly_one_from_address(dns_server: DnsTestServer, from_header: str) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    assert _dmarc_symbols(_run(dns_server, _message(from_header))) == ["DMARC_BAD_FROM"]


@pytest.mark.parametrize("spelling", ["From : ", "From\t: ", "FROM  : "])
def test_a_from_in_obsolete_syntax_is_a_second_author(
    dns_server: DnsTestServer, spelling: str
) -> None:
    # RFC 5322 4.5: white space before the colon is still a From field, as Postfix, ClamAV and
    # clients read it. The email package took line 1 for an mbox "From " line and DMARC judged
    # only the other From (outside.test, no policy): a p=reject bypass for example.test.
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.set_zone("outside.test", {"@": {"TXT": [f"v=spf1 ip4:{BAD_IP} -all"]}})
    raw = f"{spelling}CEO <ceo@example.test>\r\n".encode() + _message("Alice <alice@outside.test>")
    outcome = _run(dns_server, raw, sender="alice@outside.test")
    assert _dmarc_symbols(outcome) == ["DMARC_BAD_FROM"]
    assert outcome.verdict.action == Action.QUARANTINE


@pytest.mark.parametrize(
    "from_header", ["alice@" + "x" * 64 + ".example.test", "alice@example..test"]
)
def test_a_from_domain_dns_cannot_hold_is_a_bad_from_not_a_deferral(
    dns_server: DnsTestServer, from_header: str
) -> None:
    # It raised in the DNS library before any query, which read as a temporary DNS error:
    # 451 at every retry, then a bounce.
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _message(from_header))
    assert _dmarc_symbols(outcome) == ["DMARC_BAD_FROM"]
    assert "is not a domain name" in outcome.verdict.symbols[-1].reason


def test_an_smtputf8_from_domain_is_looked_up_by_its_a_label(dns_server: DnsTestServer) -> None:
    # Raw UTF-8 in From (RFC 6532) reached DMARC as U+FFFD and deferred the message for good.
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.set_zone("xn--mller-bau-q9a.test", {"_dmarc": {"TXT": ["v=DMARC1; p=reject"]}})
    outcome = _run(dns_server, _message("Jürgen <jürgen@müller-bau.test>"), sender="j@other.test")
    assert _dmarc_symbols(outcome) == ["DMARC_REJECT"]
    assert "from=xn--mller-bau-q9a.test" in (outcome.verdict.reply or "")


def test_an_unquoted_comma_in_the_display_name_is_one_author(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _message("Liddell, Alice <alice@example.test>"), ip=GOOD_IP)
    assert _dmarc_symbols(outcome) == ["DMARC_PASS"]


def _forwarded() -> bytes:
    """Signed by example.test, then changed by a list that sealed what it saw (dmarc=pass)."""
    signed = dkim_sign(_message(), rsa_key(), "example.test", "rsa")
    changed = signed.replace(b"Subject: invoice", b"Subject: [list] invoice")
    results = b"Authentication-Results: mx.forwarder.test; dmarc=pass header.from=example.test\r\n"
    return arc_seal(results + changed, rsa_key(), "forwarder.test", "mx.forwarder.test")


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(("forwarder.test",), "DMARC_ARC_OVERRIDE"), ((), "DMARC_REJECT")],
)
def test_trusted_arc_sealer_vouches(
    dns_server: DnsTestServer, trusted: tuple[str, ...], expected: str
) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    outcome = _run(dns_server, _forwarded(), sender="bounces@forwarder.test", trusted=trusted)
    assert _dmarc_symbols(outcome) == [expected]


def test_authentication_results_header_parses(dns_server: DnsTestServer) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    signed = dkim_sign(_message(), rsa_key(), "example.test", "rsa")
    outcome = _run(dns_server, signed, ip=GOOD_IP)
    field = authentication_results_field(AUTHSERV_ID, outcome.tx)
    assert field.startswith("Authentication-Results: mx.gateway.test;\r\n\tspf=pass")
    field.encode("ascii")
    parsed = authres.AuthenticationResultsHeader.parse(field.replace("\r\n\t", " "))
    assert parsed.authserv_id == AUTHSERV_ID
    found = {(r.method, r.result) for r in parsed.results}
    assert found == {("spf", "pass"), ("dkim", "pass"), ("arc", "none"), ("dmarc", "pass")}


def test_only_the_newest_seal_of_a_trusted_sealer_for_this_from_vouches() -> None:
    resolver = Resolver(["127.0.0.1:9"], timeout_s=0.1, lifetime_s=0.1, cache_entries=0)
    check = DmarcCheck(resolver, trusted_arc_sealers=("forwarder.test",))

    def vouches(sealers: tuple[str, ...], claims: tuple[str, ...], froms: tuple[str, ...]) -> bool:
        arc = ArcFacts("pass", len(sealers), sealers, claims, "", froms)
        return bool(check._trusted_sealer_vouches(arc, "example.test"))

    assert vouches(("forwarder.test",), ("pass",), ("example.test",))
    # A later hop (who may have changed From and body) sealed after the trusted one.
    assert not vouches(
        ("forwarder.test", "attacker.test"), ("pass", "pass"), ("example.test", "example.test")
    )
    # The trusted sealer saw dmarc=pass for another From domain.
    assert not vouches(("forwarder.test",), ("pass",), ("attacker.test",))
    assert not vouches(("forwarder.test",), ("fail",), ("example.test",))


def _after_failed_checks(
    dns_server: DnsTestServer, raw: bytes, failed: tuple[str, ...], trusted: tuple[str, ...] = ()
) -> list[str]:
    """DMARC's symbols when the checks named in `failed` crashed (an error, no facts) and SPF,
    where it did not crash, failed for an unaligned sender."""
    resolver = Resolver([dns_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=0)
    connection = Connection(id="c1", client_ip=BAD_IP, helo="mail.sender.test")
    tx = Transaction("tx-1", connection, Envelope("x@other.test", ("bob@example.org",)), raw)
    results = {
        "spf": CheckResult("spf", facts=SpfFacts("fail", "mailfrom", "other.test", BAD_IP)),
        "dkim": CheckResult("dkim", facts=DkimFacts()),
        "arc": CheckResult("arc", facts=ArcFacts("none")),
    }
    for name in failed:
        boom = f"RuntimeError: {name} crashed"
        results[name] = CheckResult(name, (Symbol(f"{name.upper()}_ERROR", boom),), error=boom)
    check = DmarcCheck(resolver, trusted_arc_sealers=trusted)
    result = asyncio.run(check.run(tx.with_results(results)))
    return [s.name for s in result.symbols]


def test_a_crashed_dkim_check_defers_only_where_a_signature_aligns(
    dns_server: DnsTestServer,
) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    aligned = dkim_sign(_message(), rsa_key(), "example.test", "rsa")
    elsewhere = dkim_sign(_message(), rsa_key(), "other.test", "rsa")
    assert _after_failed_checks(dns_server, aligned, ("dkim",)) == ["DMARC_TEMPERROR"]
    assert _after_failed_checks(dns_server, elsewhere, ("dkim",)) == ["DMARC_REJECT"]
    assert _after_failed_checks(dns_server, _message(), ("dkim",)) == ["DMARC_REJECT"]


def test_a_crashed_arc_check_defers_only_where_a_trusted_sealer_could_vouch(
    dns_server: DnsTestServer,
) -> None:
    _serve(dns_server, "v=DMARC1; p=reject")
    sealed = b"ARC-Seal: i=1; a=rsa-sha256; d=forwarder.test; s=arc; cv=none; b=x\r\n" + _message()
    trusted = ("forwarder.test",)
    assert _after_failed_checks(dns_server, sealed, ("arc",), trusted) == ["DMARC_TEMPERROR"]
    assert _after_failed_checks(dns_server, sealed, ("arc",)) == ["DMARC_REJECT"]


def test_with_spf_temperror_left_to_dmarc_its_own_timeout_defers_too(
    dns_server: DnsTestServer,
) -> None:
    # [checks.spf] temperror_at = "data": a DMARC check that runs out of time must not let
    # the SPF temperror through as an accepted message (DMARC_ERROR, score 0).
    _serve(dns_server, "v=DMARC1; p=reject")
    dns_server.drop.add(("_dmarc.example.test", "TXT"))
    resolver = Resolver([dns_server.address], timeout_s=0.5, lifetime_s=1.0, cache_entries=0)
    check = DmarcCheck(resolver, timeout_s=0.2, decides_spf_temperror=True)
    pipeline = Pipeline([check], load_policy(SHIPPED_RULES_DIR), deadline_s=5.0)
    connection = Connection(id="c1", client_ip=BAD_IP, helo="mail.sender.test")
    envelope = Envelope("alice@example.test", ("b@example.org",))
    spf = SpfFacts("temperror", "mailfrom", "example.test", BAD_IP, "DNS timed out")
    results = {"spf": CheckResult("spf", facts=spf)}
    tx = Transaction("tx-1", connection, envelope, _message(), results=results)
    outcome = asyncio.run(pipeline.run_phase(Phase.DATA, tx, final=True))
    assert _dmarc_symbols(outcome) == ["DMARC_TEMPERROR"]
    assert outcome.verdict.action == Action.TEMPFAIL
