"""Authentication-Results: building ours from facts, removing forged ones claiming our id."""

from __future__ import annotations

import authres
import pytest

from gateway.authresults import (
    authentication_results,
    sender_authenticated,
)
from gateway.model import (
    ArcFacts,
    CheckResult,
    Connection,
    DkimFacts,
    DkimSignatureFacts,
    DmarcFacts,
    Envelope,
    SpfFacts,
    Transaction,
)
from gateway.ourfields import remove_our_fields

ID = "mx.gateway.test"


def _parse(parts: list[str]) -> authres.AuthenticationResultsHeader:
    return authres.AuthenticationResultsHeader.parse("Authentication-Results: " + "; ".join(parts))


def test_every_result_with_its_properties() -> None:
    parts = authentication_results(
        ID,
        SpfFacts("fail", "mailfrom", "example.com", "203.0.113.5", "SPF fail - not authorized"),
        DkimFacts(
            (
                DkimSignatureFacts("example.com", "s1", "rsa-sha256", "pass"),
                DkimSignatureFacts("evil.test", "s2", "ed25519-sha256", "fail", "body (changed)"),
            )
        ),
        ArcFacts("pass", 1, ("forwarder.test",), ("pass",)),
        DmarcFacts("fail", "example.com", "reject", "reject", record_domain="example.com"),
    )
    parsed = _parse(parts)
    assert parsed.authserv_id == ID
    spf, dkim1, dkim2, arc, dmarc = parsed.results
    assert (spf.method, spf.result, spf.smtp_mailfrom) == ("spf", "fail", "example.com")
    assert (dkim1.result, dkim1.header_d, dkim1.header_s) == ("pass", "example.com", "s1")
    assert (dkim2.result, dkim2.header_d, dkim2.header_a) == ("fail", "evil.test", "ed25519-sha256")
    assert "body \\(changed\\)" in parts[3]  # comment parentheses escaped
    assert (arc.method, arc.result) == ("arc", "pass")
    assert (dmarc.method, dmarc.result) == ("dmarc", "fail")
    assert "p=reject dis=reject" in parts[-1]
    assert parts[-1].endswith("header.from=example.com")


def test_helo_identity_and_nothing_checked() -> None:
    parts = authentication_results(ID, SpfFacts("pass", "helo", "mail.example.com", "192.0.2.1"))
    assert parts[1].endswith("smtp.helo=mail.example.com")
    assert authentication_results(ID) == [ID, "none"]
    assert authentication_results(ID, dkim=DkimFacts()) == [ID, "dkim=none"]


def test_hostile_text_stays_one_ascii_line() -> None:
    explanation = "see (http://x) \\ \r\nInjected: yes \u00e9"
    parts = authentication_results(
        ID, SpfFacts("fail", "mailfrom", "a.test", "1.2.3.4", explanation)
    )
    text = "; ".join(parts)
    assert "\r" not in text and "\n" not in text
    text.encode("ascii")
    assert _parse(parts).results[0].result == "fail"


def test_sender_chosen_values_cannot_make_a_line_past_998_characters() -> None:
    huge = "a" * 100_000 + ".example"
    parts = authentication_results(
        ID,
        SpfFacts("fail", "mailfrom", huge, "1.2.3.4", "why " * 50_000),
        DkimFacts((DkimSignatureFacts(huge, "s" * 5000, "rsa-sha256", "fail", "x" * 9000),)),
        dmarc=DmarcFacts("fail", huge, "reject", "reject", record_domain="example"),
    )
    assert all(len(part) < 998 for part in parts)
    spf, dkim, dmarc = _parse(parts).results
    assert spf.smtp_mailfrom == "a" * 250 + "..."
    assert (dkim.result, dkim.header_d) == ("fail", "a" * 250 + "...")
    assert dmarc.result == "fail"


HEAD = (
    b"Received: from x by y; Sun, 29 Nov 2026 02:00:00 +0000\r\n"
    b"Authentication-Results: MX.Gateway.Test; spf=pass smtp.mailfrom=forged.test\r\n"
    b"Authentication-Results: (comment) mx.gateway.test;\r\n"
    b"\tdkim=pass header.d=forged.test\r\n"
    b"Authentication-Results: mx.upstream.test; dkim=pass header.d=example.com\r\n"
    b"Authentication-Results: mx.gateway.test.evil; spf=pass\r\n"
    b"Subject: hi\r\n"
)
BODY = b"\r\nAuthentication-Results: mx.gateway.test; in the body stays\r\n"


def test_removes_only_headers_claiming_our_id() -> None:
    cleaned = remove_our_fields(HEAD + BODY, ID)
    assert cleaned == (
        b"Received: from x by y; Sun, 29 Nov 2026 02:00:00 +0000\r\n"
        b"Authentication-Results: mx.upstream.test; dkim=pass header.d=example.com\r\n"
        b"Authentication-Results: mx.gateway.test.evil; spf=pass\r\n"
        b"Subject: hi\r\n" + BODY
    )


def test_message_without_ours_is_unchanged_byte_for_byte() -> None:
    raw = b"Subject: x\nAuthentication-Results: other.test; none\n\nbody\n"
    assert remove_our_fields(raw, ID) == raw
    assert remove_our_fields(b"", ID) == b""
    headers_only = b"Authentication-Results: mx.gateway.test; none\r\n"
    assert remove_our_fields(headers_only, ID) == b""


def test_forged_headers_in_quoted_or_dotted_form_are_removed_too() -> None:
    raw = (
        b'Authentication-Results: "mx.example.org"; dmarc=pass\r\n'
        b"Authentication-Results: MX.Example.Org.; dmarc=pass\r\n"
        b'Authentication-Results: (comment) "mx.ex\\ample.org" ; dkim=pass\r\n'
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"Subject: x\r\n\r\nbody\r\n"
    )
    assert remove_our_fields(raw, "mx.example.org") == (
        b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\nbody\r\n"
    )


def _tx(sender: str, spf: SpfFacts | None = None, dkim_pass: str = "") -> Transaction:
    results = {}
    if spf is not None:
        results["spf"] = CheckResult("spf", facts=spf)
    if dkim_pass:
        signature = DkimSignatureFacts(dkim_pass, "s1", "rsa-sha256", "pass")
        results["dkim"] = CheckResult("dkim", facts=DkimFacts((signature,)))
    connection = Connection("t1", "192.0.2.1")
    return Transaction("t1", connection, Envelope(sender, ("b@example.test",)), results=results)


@pytest.mark.parametrize(
    ("tx", "expected"),
    [
        (_tx("v@bank.test", SpfFacts("pass", "mailfrom", "bank.test", "192.0.2.1")), True),
        (_tx("v@BANK.test", SpfFacts("pass", "mailfrom", "bank.test.", "192.0.2.1")), True),
        (_tx("v@bank.test", SpfFacts("fail", "mailfrom", "bank.test", "192.0.2.1")), False),
        (_tx("v@bank.test", SpfFacts("softfail", "mailfrom", "bank.test", "192.0.2.1")), False),
        (_tx("v@bank.test", SpfFacts("pass", "helo", "bank.test", "192.0.2.1")), False),
        (_tx("v@bank.test", dkim_pass="mail.bank.test"), True),  # relaxed alignment
        (_tx("v@bank.test", dkim_pass="evil.test"), False),  # a pass, not the sender's
        (_tx("v@bank.test"), False),  # SPF and DKIM did not run (or failed)
        (_tx("", SpfFacts("pass", "helo", "mx.bank.test", "192.0.2.1")), False),
    ],
)
def test_sender_authenticated_by_spf_pass_or_aligned_dkim(tx: Transaction, expected: bool) -> None:
    assert sender_authenticated(tx) is expected
