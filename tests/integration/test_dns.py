"""The DNS client against the loopback DNS server: answers, negative answers, failures, cache."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config import DnsConfig
from gateway.errors import DnsError, DnsTimeout
from gateway.net.dns import DnsAnswer, Resolver
from tests.support.dns_server import DnsTestServer

LONG_TXT = "v=DKIM1; k=rsa; p=" + "A" * 600

ZONE = {
    "@": {"TXT": ["v=spf1 -all", LONG_TXT], "MX": ["10 mx"], "A": ["192.0.2.1"]},
    "mx": {"A": ["192.0.2.25"], "AAAA": ["2001:db8::25"]},
    "alias": {"CNAME": ["mx"]},
    "deep.empty": {"A": ["192.0.2.9"]},
    "*.wild": {"A": ["127.0.0.2"]},
}


@pytest.fixture
def zone_server(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.set_zone("example.test", ZONE)
    return dns_server


def test_answers_in_presentation_format(zone_server: DnsTestServer, dns_resolver: Resolver) -> None:
    txt = dns_resolver.lookup_sync("example.test", "TXT")
    assert txt.status == "ok"
    assert sorted(txt.records) == sorted(["v=spf1 -all", LONG_TXT])  # long TXT: joined strings
    assert 0 < txt.ttl <= 300
    assert dns_resolver.lookup_sync("example.test", "MX").records == ("10 mx.example.test.",)
    assert dns_resolver.lookup_sync("mx.example.test", "AAAA").records == ("2001:db8::25",)
    assert dns_resolver.lookup_sync("alias.example.test", "A").records == ("192.0.2.25",)
    assert dns_resolver.lookup_sync("x.y.wild.example.test", "A").records == ("127.0.0.2",)


def test_nxdomain_and_nodata_are_different(
    zone_server: DnsTestServer, dns_resolver: Resolver
) -> None:
    assert dns_resolver.lookup_sync("nope.example.test", "A") == DnsAnswer("nxdomain", (), 60)
    assert dns_resolver.lookup_sync("mx.example.test", "TXT") == DnsAnswer("nodata", (), 60)
    # An empty non-terminal exists: no data, not NXDOMAIN.
    assert dns_resolver.lookup_sync("empty.example.test", "A").status == "nodata"


@pytest.mark.parametrize(
    "name",
    ["x" * 64 + ".example.test", "a..example.test", "x." * 130 + "example.test", "a\\300.test"],
)
def test_a_name_dns_cannot_hold_does_not_exist(
    zone_server: DnsTestServer, dns_resolver: Resolver, name: str
) -> None:
    # dnspython refuses to build such names; that was a DnsError, i.e. "try again later".
    assert dns_resolver.lookup_sync(name, "TXT") == DnsAnswer("nxdomain", (), 0)
    assert asyncio.run(dns_resolver.lookup(name, "A")).status == "nxdomain"


def test_async_lookup(zone_server: DnsTestServer, dns_resolver: Resolver) -> None:
    answer = asyncio.run(dns_resolver.lookup("example.test", "A"))
    assert answer == DnsAnswer("ok", ("192.0.2.1",), answer.ttl)
    assert asyncio.run(dns_resolver.lookup("nope.example.test", "A")).status == "nxdomain"


def test_cache_is_shared_and_covers_negative_answers(
    zone_server: DnsTestServer, dns_resolver: Resolver
) -> None:
    dns_resolver.lookup_sync("example.test", "A")
    dns_resolver.lookup_sync("nope.example.test", "A")
    dns_resolver.lookup_sync("mx.example.test", "TXT")
    asked = len(zone_server.queries)
    assert asyncio.run(dns_resolver.lookup("example.test", "A")).status == "ok"
    assert dns_resolver.lookup_sync("nope.example.test", "A").status == "nxdomain"
    assert dns_resolver.lookup_sync("mx.example.test", "TXT").status == "nodata"
    assert len(zone_server.queries) == asked


def test_cache_is_bounded(zone_server: DnsTestServer) -> None:
    resolver = Resolver([zone_server.address], 0.5, 1.0, cache_entries=2)
    for name in ("example.test", "mx.example.test", "alias.example.test"):
        resolver.lookup_sync(name, "A")
    zone_server.clear_queries()
    resolver.lookup_sync("example.test", "A")  # evicted as least recently used
    assert zone_server.queries == [("example.test", "A")]


def test_timeout_is_bounded(zone_server: DnsTestServer) -> None:
    zone_server.mode = "drop"
    resolver = Resolver([zone_server.address], timeout_s=0.2, lifetime_s=0.5, cache_entries=10)
    started = time.monotonic()
    with pytest.raises(DnsTimeout):
        resolver.lookup_sync("example.test", "A")
    assert time.monotonic() - started < 1.0


def test_async_timeout(zone_server: DnsTestServer) -> None:
    zone_server.mode = "drop"
    resolver = Resolver([zone_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=10)
    with pytest.raises(DnsTimeout):
        asyncio.run(resolver.lookup("example.test", "A"))


@pytest.mark.parametrize("mode", ["servfail", "refused"])
def test_server_errors_are_dns_errors(
    zone_server: DnsTestServer, dns_resolver: Resolver, mode: str
) -> None:
    zone_server.mode = mode  # type: ignore[assignment]
    with pytest.raises(DnsError, match=mode.upper()) as caught:
        dns_resolver.lookup_sync("example.test", "A")
    assert not isinstance(caught.value, DnsTimeout)


def test_names_outside_served_zones_are_refused(
    zone_server: DnsTestServer, dns_resolver: Resolver
) -> None:
    with pytest.raises(DnsError, match="REFUSED"):
        dns_resolver.lookup_sync("example.org", "A")


def test_zones_change_while_running(zone_server: DnsTestServer) -> None:
    resolver = Resolver([zone_server.address], 0.5, 1.0, cache_entries=0)
    zone_server.set_zone("example.test", '@ 300 IN TXT "v=spf1 +all"\n')
    assert resolver.lookup_sync("example.test", "TXT").records == ("v=spf1 +all",)
    zone_server.remove_zone("example.test")
    with pytest.raises(DnsError):
        resolver.lookup_sync("example.test", "TXT")


def test_from_config_accepts_host_and_port(zone_server: DnsTestServer) -> None:
    config = DnsConfig(nameservers=(zone_server.address,), timeout_s=0.5, lifetime_s=1.0)
    resolver = Resolver.from_config(config)
    assert resolver.lookup_sync("mx.example.test", "A").records == ("192.0.2.25",)


def test_answer_too_big_for_udp_comes_over_tcp(dns_server: DnsTestServer) -> None:
    records = [f"record {i} " + "x" * 500 for i in range(4)]  # ~2 KB: more than EDNS's 1232
    dns_server.set_zone("big.test", {"@": {"TXT": records}})
    resolver = Resolver([dns_server.address], 0.5, 1.0, cache_entries=0)
    assert sorted(resolver.lookup_sync("big.test", "TXT").records) == records
