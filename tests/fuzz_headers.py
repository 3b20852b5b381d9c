"""Hostile header values through every DATA-phase check that reads headers.

The stdlib's address and header parsers (email.utils, email._header_value_parser,
email.header) raise TypeError, UnboundLocalError, IndexError, AssertionError... on some
values; a check that lets one escape ends in its *_ERROR symbol with score 0, which is points
lost on exactly the mail that is built to confuse parsers. Each check must instead report a
named symbol (HDR_MALFORMED_ADDRESS, ...) or nothing.

Short run (the unit test): tests/unit/test_fuzz_headers.py, fixed seed, a few seconds.
Long run, from the repository root, against the same checks (a loopback DNS server is
started for DMARC and the URIBL zones):

    .venv/bin/python -m tests.fuzz_headers --seconds 600 [--seed N]

It prints each failing value once (check, symbol, header, value) and exits 1 if any.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.checks.dmarc import DmarcCheck
from gateway.checks.headers import HeadersCheck
from gateway.checks.lists import ListsCheck
from gateway.checks.rules import RulesCheck
from gateway.checks.uribl import UriblCheck
from gateway.config import SHIPPED_RULES_DIR
from gateway.dnslists import load_zones
from gateway.model import Connection, Envelope, Phase, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check
from gateway.pipeline.runner import PhaseRunner

HEADERS = ("From", "To", "Cc", "Reply-To", "Sender", "Date", "Message-ID", "Subject")
# Pieces the RFC 5322 / 2047 grammars give meaning to, and values that once crashed a parser.
TOKENS = (
    "a",
    "bob",
    "x.y",
    "example.test",
    "@",
    "@@",
    ".",
    "..",
    ",",
    ";",
    ":",
    "<",
    ">",
    "<>",
    "(",
    ")",
    "((",
    "))",
    '"',
    "\\",
    '\\"',
    "[",
    "]",
    "[127.0.0.1]",
    "!",
    "%",
    "=",
    "?",
    "=?utf-8?q?",
    "=?utf-8?b?",
    "?=",
    "=?",
    "=?utf-8?q?=C3=A9?=",
    "=?iso-8859-1?b?6Q==?=",
    "=?x-unknown?q?a?=",
    "=?utf-8*en?q?a?=",
    "=?utf-8?q?a b?=",
    "=??q??=",
    " ",
    "  ",
    "\t",
    "\r\n ",
    "\r\n\t",
    "é",
    "中文",
    "\u200b",
    "\u202e",
    "\x7f",
    "\x01",
    "'",
    "`",
    "|",
    "~",
    "group:",
    "g: a@b.c;",
    "undisclosed-recipients:;",
    "(c) .)",
    "..!%>",
    '"a"@b.c',
    "a@b.c",
    "Name <a@b.c>",
    "<a@b.c>",
    "@route:a@b.c",
    "a@[IPv6:::1]",
    "Mon,",
    "32 Foo",
    "1 Jan 2026",
    "25:61:61",
    "+9999",
    "-0000",
    "GMT",
    "0",
    "99999999999999999999",
)
SEEDS = (
    "(c) .)",
    "=?utf-8?q?a?=@[ ",
    " ..;",
    ":é];!:];",
    " %%é<",
    "a@b.c\r\n ..!%>",
    "x\r\n ..!%>",
    "Name\r\n <..!%>",
    '"\\',
    "=?utf-8?q?=?utf-8?q?",
    "g:;(",
    "a@b.c, (",
    "<@>",
    ":;",
)


def hostile_value(rng: random.Random) -> str:
    """A value built from grammar pieces, or a known crasher mutated a little."""
    if rng.random() < 0.25:
        value = rng.choice(SEEDS)
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(value))
            value = value[:at] + rng.choice(TOKENS) + value[at:]
        return value
    length = rng.choice((1, 2, 3, 4, 5, 6, 8, 12))  # short values reach the parsers' corners
    return "".join(rng.choice(TOKENS) for _ in range(length))


def hostile_message(rng: random.Random) -> bytes:
    lines = []
    for name in HEADERS:
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            lines.append(f"{name}: {hostile_value(rng)}")
    rng.shuffle(lines)
    text = "\r\n".join(lines) + "\r\n\r\nHello http://www.example.test/x\r\n"
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Failure:
    check: str
    reason: str
    raw: bytes


def header_checks(resolver: Resolver) -> list[Check]:
    """Every DATA-phase check that reads header values, as the gateway builds them (shipped
    rule files; the URIBL zones all enabled, asked of `resolver`)."""
    zones = load_zones(SHIPPED_RULES_DIR / "dnsbl.toml", "domain", include_disabled=True)
    return [
        HeadersCheck(),
        DmarcCheck(resolver),
        ListsCheck(SHIPPED_RULES_DIR / "lists.toml"),
        RulesCheck([SHIPPED_RULES_DIR / "headers.toml", SHIPPED_RULES_DIR / "body.toml"]),
        UriblCheck(zones, resolver, max_domains=3, failures_before_pause=10**9),
    ]


async def _run_one(runner: PhaseRunner, raw: bytes) -> list[Failure]:
    connection = Connection(id="c", client_ip="192.0.2.1", helo="client.test")
    tx = Transaction("fuzz", connection, Envelope("a@example.test", ("b@example.test",)), raw)
    tx = await runner.run(Phase.DATA, tx, time.monotonic() + 30.0)
    return [
        Failure(result.check, symbol.reason, raw)
        for result in tx.results.values()
        for symbol in result.symbols
        if symbol.name.endswith("_ERROR") and symbol.name != "URIBL_ZONE_ERROR"
    ]


def messages(seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    while True:
        yield hostile_message(rng)


def fuzz(
    checks: Sequence[Check], seed: int, seconds: float, max_messages: int | None = None
) -> tuple[int, list[Failure]]:
    """Feed hostile messages through `checks` for `seconds` (or `max_messages`); return how
    many were fed and the failures, one per distinct (check, reason)."""

    async def main() -> tuple[int, list[Failure]]:
        runner = PhaseRunner(checks)
        found: dict[tuple[str, str], Failure] = {}
        fed = 0
        deadline = time.monotonic() + seconds
        for raw in messages(seed):
            if time.monotonic() > deadline or (max_messages is not None and fed >= max_messages):
                break
            for failure in await _run_one(runner, raw):
                found.setdefault((failure.check, failure.reason), failure)
            fed += 1
        return fed, list(found.values())

    return asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args(argv)
    from tests.support.dns_server import DnsTestServer

    logging.disable(logging.ERROR)  # the runner logs each crash's traceback: listed below

    server = DnsTestServer().start()
    server.mode = "refused"  # every lookup answers at once: the parsers are under test
    try:
        resolver = Resolver([server.address], timeout_s=0.2, lifetime_s=0.4, cache_entries=1000)
        fed, failures = fuzz(header_checks(resolver), args.seed, args.seconds)
    finally:
        server.stop()
    print(f"seed {args.seed}: {fed} messages, {len(failures)} distinct failures")
    for failure in failures:
        print(f"{failure.check}: {failure.reason}\n    {failure.raw!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
