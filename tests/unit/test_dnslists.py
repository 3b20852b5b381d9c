"""DNS list configuration and answer meaning (no sockets: see tests/integration/test_dnsbl.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.config import SHIPPED_RULES_DIR
from gateway.dnslists import Zone, ip_query_name, load_zones
from gateway.errors import ConfigError


@pytest.mark.parametrize(
    ("ip", "name"),
    [
        ("192.0.2.1", "1.2.0.192.zen.example"),
        ("::ffff:192.0.2.1", "1.2.0.192.zen.example"),
        (
            "2001:db8::1",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example",
        ),
    ],
)
def test_query_names(ip: str, name: str) -> None:
    assert ip_query_name(ip, "zen.example") == name


def test_bitmask_and_any_answers() -> None:
    zone = Zone(
        "multi",
        "multi.example",
        "domain",
        {"127.0.0.2": "URIBL_BLACK", "127.0.0.4": "URIBL_GREY", "any": "URIBL_OTHER"},
        match="bitmask",
    )
    assert zone.symbols_for(ipaddress.IPv4Address("127.0.0.6")) == ["URIBL_BLACK", "URIBL_GREY"]
    assert zone.symbols_for(ipaddress.IPv4Address("127.0.0.8")) == ["URIBL_OTHER"]
    exact = Zone("z", "z.example", "ip", {"127.0.0.2": "DNSBL_Z"})
    assert exact.symbols_for(ipaddress.IPv4Address("127.0.0.3")) == []


def test_shipped_lists_are_valid_and_disabled() -> None:
    path = SHIPPED_RULES_DIR / "dnsbl.toml"
    assert load_zones(path, "ip") == [] and load_zones(path, "domain") == []


def test_shipped_examples_work_once_enabled(tmp_path: Path) -> None:
    path = tmp_path / "dnsbl.toml"
    path.write_text(
        (SHIPPED_RULES_DIR / "dnsbl.toml").read_text().replace("enabled = false", "enabled = true")
    )
    ip_zones = {z.zone for z in load_zones(path, "ip")}
    assert {"zen.spamhaus.org", "bl.spamcop.net", "list.dnswl.org"} <= ip_zones
    assert {"dbl.spamhaus.org", "multi.surbl.org"} <= {z.zone for z in load_zones(path, "domain")}


def test_bad_zones_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "dnsbl.toml"
    path.write_text(
        '[zone.a]\nzone = "nodots"\nkind = "ipv4"\nenabled = false\ncolour = 1\n'
        '[zone.a.answers]\n"10.0.0.1" = "DNSBL_A"\n'
        '[zone.b]\nzone = "b.example"\nkind = "ip"\ndomains = ["url"]\n'
        '[zone.b.answers]\n"127.0.0.2" = "URIBL_WRONG_PREFIX"\n'
        '[zone.c]\nzone = "c.example"\nkind = "domain"\nmatch = "fuzzy"\n'
        'domains = ["body"]\nerror_answers = ["x"]\n'
        "[settings]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_zones(path, "ip")
    text = "\n".join(caught.value.problems)
    for expected in (
        "unknown tables ['settings']",
        "zone.a: unknown keys ['colour']",
        "zone.a.zone: a DNS zone name is required",
        "zone.a.kind: 'ipv4' is not one of 'ip', 'domain'",
        "zone.a.answers: '10.0.0.1' is not an address in 127.0.0.0/8",
        "zone.b.domains: only used with kind = 'domain'",
        "zone.b.answers.127.0.0.2: 'URIBL_WRONG_PREFIX' must be an UPPER_SNAKE symbol starting "
        "with DNSBL_ or DNSWL_",
        "zone.c.match: 'fuzzy' is not one of 'exact', 'bitmask'",
        "zone.c.domains: a non-empty list of url, sender, from",
        "zone.c.error_answers: a list of IPv4 addresses",
        "zone.c.answers: a table of answer address -> symbol is required",
    ):
        assert expected in text


def test_names_dns_cannot_carry_are_skipped_not_counted_as_list_failures() -> None:
    from gateway.dnslists import _fits_dns

    assert _fits_dns("evil.example.com.dbl.test")
    assert not _fits_dns("x" * 64 + ".example.com.dbl.test")
    assert not _fits_dns(".".join(["y" * 60] * 5))
