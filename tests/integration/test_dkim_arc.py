"""DKIM and ARC with keys generated here, published on the loopback DNS server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.authresults import authentication_results
from gateway.checks.arc import ArcCheck, arc_symbol, verify_arc
from gateway.checks.dkim import DkimCheck, dkim_symbols, verify_dkim
from gateway.model import (
    ArcFacts,
    Connection,
    DkimFacts,
    DkimSignatureFacts,
    Envelope,
    Transaction,
)
from gateway.net.dns import Resolver
from tests.support.dkim_keys import arc_seal, dkim_sign, ed25519_key, rsa_key
from tests.support.dns_server import DnsTestServer

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: quarterly numbers\r\n"
    b"Date: Sun, 29 Nov 2026 02:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"Hello Bob,\r\nthe numbers are attached.\r\n"
)


@pytest.fixture
def resolver(dns_server: DnsTestServer) -> Resolver:
    dns_server.set_zone(
        "example.test",
        {
            "rsa._domainkey": {"TXT": [rsa_key().txt()]},
            "ed._domainkey": {"TXT": [ed25519_key().txt()]},
            "revoked._domainkey": {"TXT": ["v=DKIM1; k=rsa; p="]},
            "short._domainkey": {"TXT": [rsa_key().txt()]},
        },
    )
    dns_server.set_zone("forwarder.test", {"arc._domainkey": {"TXT": [rsa_key().txt()]}})
    dns_server.set_zone("list.test", {"arc._domainkey": {"TXT": [rsa_key().txt()]}})
    return Resolver([dns_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=100)


def _results(facts: DkimFacts) -> list[tuple[str, str]]:
    return [(s.selector, s.result) for s in facts.signatures]


def test_valid_rsa_and_ed25519_signatures(resolver: Resolver) -> None:
    signed = dkim_sign(
        dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa"), ed25519_key(), "example.test", "ed"
    )
    facts = verify_dkim(signed, resolver, 1024)
    assert _results(facts) == [("ed", "pass"), ("rsa", "pass")]
    assert facts.signatures[0].algorithm == "ed25519-sha256"
    assert facts.domains_with("pass") == ("example.test", "example.test")


@pytest.mark.parametrize(
    ("change", "result", "reason"),
    [
        (lambda m: m.replace(b"numbers are", b"numbers were"), "fail", "body hash mismatch"),
        (lambda m: m.replace(b"quarterly", b"urgent"), "fail", "headers changed"),
    ],
    ids=["body-changed", "header-changed"],
)
def test_changed_message_fails(
    resolver: Resolver, change: Callable[[bytes], bytes], result: str, reason: str
) -> None:
    facts = verify_dkim(
        change(dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa")), resolver, 1024
    )
    ((_, got),) = _results(facts)
    assert got == result
    assert reason in facts.signatures[0].reason


@pytest.mark.parametrize(
    ("selector", "min_rsa_bits", "result", "reason"),
    [
        ("missing", 1024, "permerror", "no key"),
        ("revoked", 1024, "fail", "revoked"),
        ("short", 2048, "permerror", "too small"),  # a 1024-bit key where 2048 are required
    ],
)
def test_key_problems(
    resolver: Resolver, selector: str, min_rsa_bits: int, result: str, reason: str
) -> None:
    signed = dkim_sign(MESSAGE, rsa_key(), "example.test", selector)
    facts = verify_dkim(signed, resolver, min_rsa_bits)
    assert _results(facts) == [(selector, result)]
    assert reason in facts.signatures[0].reason


def test_two_signatures_one_broken(resolver: Resolver) -> None:
    good = dkim_sign(MESSAGE, ed25519_key(), "example.test", "ed")
    # Signed by another RSA key than the one published for the selector.
    both = dkim_sign(good, rsa_key(seed=1), "example.test", "rsa")
    facts = verify_dkim(both, resolver, 1024)
    assert _results(facts) == [("rsa", "fail"), ("ed", "pass")]
    result = asyncio.run(DkimCheck(resolver).run(_tx(both)))
    assert sorted(s.name for s in result.symbols) == ["DKIM_FAIL", "DKIM_PASS"]


def test_a_long_run_of_blanks_is_canonicalized_in_linear_time(resolver: Resolver) -> None:
    # dkimpy's relaxed body canonicalization took the square of a run of blanks that no CRLF
    # ends (100,000 spaces: 16 s, holding the GIL). The body hash here is wrong on purpose:
    # finding that out needs the whole body canonicalized.
    head, _, _ = MESSAGE.partition(b"\r\n\r\n")
    message = (
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=rsa;\r\n"
        b" h=from:to; bh=47DEQpj8HBSa+/TmW+yL+g5mVQpQAvw8BxE2N0Wp5ZA=; b=AAAA\r\n"
        + head
        + b"\r\n\r\nx"
        + b" " * 200_000
        + b"x\r\n"
    )
    with ThreadPoolExecutor(1) as thread:
        facts = thread.submit(verify_dkim, message, resolver, 1024).result(timeout=10)
    assert _results(facts) == [("rsa", "fail")]
    assert "body hash mismatch" in facts.signatures[0].reason


def test_many_signed_names_and_long_folds_are_verified_in_linear_time(resolver: Resolver) -> None:
    # dkimpy grew a folded field with bytes += per line and looked every h= name up from the
    # bottom of all fields: 900,000 fold lines and 90,000 names over 90,000 fields took
    # a minute. The body hash is right, so dkimpy goes on to select and hash the headers.
    body = b"hi\r\n"
    body_hash = base64.b64encode(hashlib.sha256(body).digest())
    names = b":".join([b"x-absent"] * 90_000)
    message = (
        b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.test; s=rsa;\r\n"
        b" h=from:" + names + b"; bh=" + body_hash + b"; b=AAAA\r\n"
        b"From: Alice <alice@example.test>\r\n"
        + b"X-Filler: v\r\n" * 90_000
        + b"Subject: folded\r\n"
        + b" x\r\n" * 900_000
        + b"\r\n"
        + body
    )
    with ThreadPoolExecutor(1) as thread:
        facts = thread.submit(verify_dkim, message, resolver, 1024).result(timeout=15)
    assert _results(facts) == [("rsa", "fail")]
    assert "body hash mismatch" not in facts.signatures[0].reason


def test_signature_algorithm_not_matching_the_key_is_permerror(resolver: Resolver) -> None:
    signed = dkim_sign(MESSAGE, rsa_key(), "example.test", "ed")  # the ed key is ed25519
    assert _results(verify_dkim(signed, resolver, 1024)) == [("ed", "permerror")]


def test_length_tag_with_appended_content_is_neutral(resolver: Resolver) -> None:
    signed = dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa", length=True)
    assert _results(verify_dkim(signed, resolver, 1024)) == [("rsa", "pass")]
    appended = signed + b"Click here: http://evil.test/\r\n"
    facts = verify_dkim(appended, resolver, 1024)
    assert _results(facts) == [("rsa", "neutral")]
    assert "unsigned" in facts.signatures[0].reason


def test_unsigned_and_malformed(resolver: Resolver) -> None:
    assert verify_dkim(MESSAGE, resolver, 1024) == DkimFacts()
    facts = verify_dkim(b"DKIM-Signature: v=1; nonsense\r\n" + MESSAGE, resolver, 1024)
    assert [s.result for s in facts.signatures] == ["permerror"]
    result = asyncio.run(DkimCheck(resolver).run(_tx(MESSAGE)))
    assert [s.name for s in result.symbols] == ["DKIM_NONE"]


def test_a_message_whose_first_line_is_folded_is_a_permerror_not_a_failed_check(
    resolver: Resolver,
) -> None:
    # dkimpy's header split raised IndexError on it: DKIM_ERROR, the check failed open.
    signed = b" folded first line\r\n" + dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa")
    result = asyncio.run(DkimCheck(resolver).run(_tx(signed)))
    assert [s.name for s in result.symbols] == ["DKIM_PERMERROR"]
    assert "malformed message" in result.symbols[0].reason
    assert verify_dkim(b" folded first line\r\n" + MESSAGE, resolver, 1024) == DkimFacts()
    assert verify_arc(b" folded first line\r\n" + MESSAGE, resolver, 1024).result == "none"


def test_dns_timeout_is_temperror(dns_server: DnsTestServer, resolver: Resolver) -> None:
    signed = dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa")
    dns_server.mode = "drop"
    started = time.monotonic()
    facts = verify_dkim(signed, resolver, 1024)
    assert _results(facts) == [("rsa", "temperror")]
    assert time.monotonic() - started < 1.0


def _signed(count: int, selectors: Callable[[int], str] = lambda i: "rsa") -> bytes:
    message = MESSAGE
    for i in range(count):
        message = dkim_sign(message, rsa_key(), "example.test", selectors(i))
    return message


def test_signatures_past_max_signatures_are_named_not_verified(resolver: Resolver) -> None:
    # Each costs a key lookup and a body hash: 30 behind a silent DNS server took 68 s.
    signed = _signed(12)
    facts = verify_dkim(signed, resolver, 1024, max_signatures=10)
    assert [s.result for s in facts.signatures] == ["pass"] * 10 and facts.unverified == 2
    result = asyncio.run(DkimCheck(resolver, max_signatures=10).run(_tx(signed)))
    symbols = {s.name: s.reason for s in result.symbols}
    assert set(symbols) == {"DKIM_PASS", "DKIM_LIMIT"}
    assert symbols["DKIM_LIMIT"] == "12 DKIM-Signatures: the 2 after the first 10 not verified"


def test_key_lookups_of_one_message_share_a_dns_time_budget(
    dns_server: DnsTestServer, resolver: Resolver
) -> None:
    # A thread cannot be stopped when its check times out: the verification must end itself.
    signed = _signed(30, lambda i: f"s{i}")
    dns_server.mode = "drop"
    started = time.monotonic()
    facts = verify_dkim(signed, resolver, 1024, max_signatures=30, dns_time_s=1.0)
    assert time.monotonic() - started < 2.0  # 30 lookups of 0.4 s each: 12 s before
    assert [s.result for s in facts.signatures] == ["temperror"] * 30
    assert "no DNS time left of 1s" in facts.signatures[-1].reason
    chain = _forwarded(["forwarder.test", "list.test"] * 4)  # 16 key lookups
    started = time.monotonic()
    assert verify_arc(chain, resolver, 1024, dns_time_s=1.0).result == "fail"
    assert time.monotonic() - started < 2.0


def test_dns_bound_checks_leave_the_default_threads_free(dns_server: DnsTestServer) -> None:
    # In the event loop's default pool, 32 messages with signatures against a dead DNS took
    # every thread the spool, the quarantine and the other checks use.
    resolver = Resolver([dns_server.address], 0.2, 0.4, 100, blocking_threads=2)
    check = DkimCheck(resolver, dns_time_s=0.5)
    signed = _signed(5, lambda i: f"s{i}")  # 2 s per message without the budget
    dns_server.mode = "drop"

    async def wait_for_a_default_thread() -> float:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        checks = [asyncio.create_task(check.run(_tx(signed))) for _ in range(4)]
        await asyncio.sleep(0.05)  # all four verifying or queued
        started = time.monotonic()
        await asyncio.to_thread(time.sleep, 0)
        waited = time.monotonic() - started
        results = await asyncio.gather(*checks)
        assert all(r.symbols[0].name == "DKIM_TEMPERROR" for r in results)
        return waited

    assert asyncio.run(wait_for_a_default_thread()) < 0.3


def test_reasons_name_a_few_signatures_and_sealers_and_count_the_rest() -> None:
    # 2000 signatures made a 250 KB reason, in the log line and the quarantine index.
    unknown = DkimSignatureFacts("x" * 300 + ".test", "sel", "rsa-sha256", "permerror", "no key")
    (permerror,) = dkim_symbols(DkimFacts((unknown,) * 2000))
    assert permerror.reason.endswith("...; and 1997 more") and len(permerror.reason) < 500
    sealers = tuple(f"sealer{i}.test" for i in range(50))
    broken = ArcFacts("fail", 50, sealers, reason="x" * 5000)
    for text in (arc_symbol(broken).reason, authentication_results("mx.test", arc=broken)[1]):
        assert "sealer4.test,and 45 more" in text and len(text) < 400


def _forwarded(sealers: list[str], dmarc: str = "pass") -> bytes:
    message = dkim_sign(MESSAGE, rsa_key(), "example.test", "rsa")
    for hop, sealer in enumerate(sealers):
        arc = "; arc=pass" if hop else ""  # what a forwarder records about the chain it got
        results = f"Authentication-Results: mx.{sealer}; dmarc={dmarc}{arc}\r\n"
        message = arc_seal(results.encode() + message, rsa_key(), sealer, f"mx.{sealer}")
    return message


def test_arc_chain_passes_and_names_sealers(resolver: Resolver) -> None:
    facts = verify_arc(_forwarded(["forwarder.test", "list.test"]), resolver, 1024)
    assert (facts.result, facts.instances) == ("pass", 2)
    assert facts.sealers == ("forwarder.test", "list.test")
    assert facts.sealer_dmarc == ("pass", "pass")


def test_arc_chain_broken_by_a_change_fails(resolver: Resolver) -> None:
    changed = _forwarded(["forwarder.test"]).replace(b"Hello Bob", b"Hello Eve")
    facts = verify_arc(changed, resolver, 1024)
    assert facts.result == "fail"
    result = asyncio.run(ArcCheck(resolver).run(_tx(changed)))
    assert [s.name for s in result.symbols] == ["ARC_FAIL"]
    assert "forwarder.test" in result.symbols[0].reason


def test_no_arc(resolver: Resolver) -> None:
    assert verify_arc(MESSAGE, resolver, 1024).result == "none"


def _tx(raw: bytes) -> Transaction:
    connection = Connection(id="c1", client_ip="192.0.2.1", helo="mx.example.test")
    return Transaction("t1", connection, Envelope("alice@example.test", ("bob@example.org",)), raw)


def test_no_thread_for_the_client_in_time_is_temperror_per_signature(
    dns_server: DnsTestServer,
) -> None:
    # The client's share of the DNS-bound threads is taken (its other sessions wait on a
    # silent DNS): its signatures are temperrors, which DMARC defers on, not a failed check.
    resolver = Resolver(
        [dns_server.address],
        0.2,
        0.4,
        100,
        blocking_threads=2,
        threads_per_client=1,
        thread_wait_s=0.1,
    )
    release = threading.Event()
    signed = _signed(2, lambda i: ("rsa", "ed")[i])

    async def main() -> None:
        held = asyncio.ensure_future(resolver.run_blocking("192.0.2.1", release.wait, 5.0))
        await asyncio.sleep(0.05)
        result = await DkimCheck(resolver).run(_tx(signed))
        release.set()
        await held
        (symbol,) = result.symbols
        assert symbol.name == "DKIM_TEMPERROR"
        assert "no thread free within 0.1s" in symbol.reason
        facts = result.facts
        assert isinstance(facts, DkimFacts)
        assert [(s.domain, s.selector) for s in facts.signatures] == [
            ("example.test", "ed"),
            ("example.test", "rsa"),
        ]

    try:
        asyncio.run(main())
    finally:
        release.set()
