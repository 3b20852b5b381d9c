"""DMARC record parsing (RFC 7489 6.3), organisational domains and alignment."""

from __future__ import annotations

import pytest

from gateway.checks.dmarc import (
    DmarcRecord,
    MalformedRecord,
    aligned,
    organizational_domain,
    parse_record,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v=DMARC1; p=reject", DmarcRecord("reject", "reject")),
        ("v=DMARC1;p=quarantine;sp=none;pct=20", DmarcRecord("quarantine", "none", pct=20)),
        ("v=DMARC1; p=none; adkim=s; aspf=s", DmarcRecord("none", "none", True, True)),
        ("v=DMARC1; p=REJECT; sp=bogus; pct=abc", DmarcRecord("reject", "reject")),
        ("v=DMARC1; p=reject; pct=500", DmarcRecord("reject", "reject")),
        ("v=DMARC1; p=x; rua=mailto:r@example.com", DmarcRecord("none", "none")),  # 6.6.3
    ],
)
def test_parse(text: str, expected: DmarcRecord) -> None:
    assert parse_record(text) == expected


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1; p=maybe", "p=reject", "v=DMARC2; p=none"])
def test_malformed(text: str) -> None:
    with pytest.raises(MalformedRecord):
        parse_record(text)


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example.com", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("Example.COM.", "example.com"),
        ("co.uk", "co.uk"),  # a public suffix is its own organisational domain
        ("news.example.test", "example.test"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


def test_alignment_modes() -> None:
    assert aligned("mail.example.com", "example.com", strict=False)
    assert not aligned("mail.example.com", "example.com", strict=True)
    assert aligned("EXAMPLE.com.", "example.com", strict=True)
    assert not aligned("example.co.uk", "other.co.uk", strict=False)
    assert aligned("xn--bcher-kva.example", "Bücher.example", strict=True)  # IDN From domain
