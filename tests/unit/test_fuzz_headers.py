"""Hostile header values never make a header-reading check fail (its *_ERROR symbol, score 0):
a value the stdlib parsers cannot read is a named malformed-input symbol. The long run is
`python -m tests.fuzz_headers --seconds 600` (tests/fuzz_headers.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.checks.headers import HeadersCheck
from gateway.model import Connection, Envelope, Transaction
from gateway.net.dns import Resolver
from tests.fuzz_headers import fuzz, header_checks
from tests.support.dns_server import DnsTestServer

SEED = 20261208
SECONDS = 3.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Cc", "(c) .)"),  # TypeError in get_name_addr
        ("From", "=?utf-8?q?a?=@[ "),  # UnboundLocalError in get_domain_literal
        ("From", "\r\n ..!%>"),  # folded: TypeError again
        ("To", " ..;"),
        ("Reply-To", ":é];!:];"),
    ],
)
def test_values_the_stdlib_parser_crashes_on_are_malformed_addresses(name: str, value: str) -> None:
    raw = f"{name}: {value}\r\nDate: x\r\nMessage-ID: <1@x.test>\r\n\r\nbody\r\n".encode()
    connection = Connection(id="c", client_ip="192.0.2.1", helo="client.test")
    tx = Transaction("t", connection, Envelope("a@example.test", ("b@example.test",)), raw)
    result = asyncio.run(HeadersCheck().run(tx))
    assert "HDR_MALFORMED_ADDRESS" in [s.name for s in result.symbols]


def test_hostile_headers_never_end_a_check_in_its_error_symbol(
    dns_server: DnsTestServer,
) -> None:
    dns_server.mode = "refused"  # DMARC and URIBL get their answer at once: parsers under test
    resolver = Resolver([dns_server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=1000)
    started = time.monotonic()
    fed, failures = fuzz(header_checks(resolver), SEED, SECONDS)
    assert fed > 200, fed  # the run did feed something
    assert time.monotonic() - started < SECONDS + 2.0
    assert failures == [], [(f.check, f.reason, f.raw) for f in failures[:5]]
