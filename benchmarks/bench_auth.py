"""Time each email-authentication check adds per message, with loopback DNS.

    .venv/bin/python benchmarks/bench_auth.py [--messages 300]

Every message is signed with a 2048-bit RSA and an ed25519 DKIM signature and carries one ARC
set; SPF needs four lookups (TXT, include, a, mx) and DMARC one or two. Each check runs on its
own, one message at a time, so its time is its own: p50 and p99 per check, once with the
resolver's cache off (every lookup goes to the loopback DNS server) and once with it on.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support: the benchmark serves DNS like the tests

from gateway.checks.arc import ArcCheck  # noqa: E402
from gateway.checks.dkim import DkimCheck  # noqa: E402
from gateway.checks.dmarc import DmarcCheck  # noqa: E402
from gateway.checks.spf import SpfCheck  # noqa: E402
from gateway.model import Connection, Envelope, Transaction  # noqa: E402
from gateway.net.dns import Resolver  # noqa: E402
from gateway.pipeline.check import Check  # noqa: E402
from tests.support.dkim_keys import arc_seal, dkim_sign, ed25519_key, rsa_key  # noqa: E402
from tests.support.dns_server import DnsTestServer  # noqa: E402


def _serve(server: DnsTestServer) -> None:
    server.set_zone(
        "example.test",
        {
            "@": {
                "TXT": ["v=spf1 include:_spf.example.test a mx -all"],
                "A": ["192.0.2.1"],
                "MX": ["10 mx"],
            },
            "_spf": {"TXT": ["v=spf1 ip4:198.51.100.0/24 -all"]},
            "mx": {"A": ["192.0.2.25"]},
            "_dmarc": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@example.test"]},
            "rsa._domainkey": {"TXT": [rsa_key(2048).txt()]},
            "ed._domainkey": {"TXT": [ed25519_key().txt()]},
        },
    )
    server.set_zone("forwarder.test", {"arc._domainkey": {"TXT": [rsa_key(2048).txt()]}})


def _message(index: int) -> bytes:
    body = "".join(
        f"Line {n} of a typical business message of message {index}.\r\n" for n in range(60)
    )
    raw = (
        f"From: Alice <alice@news.example.test>\r\nTo: bob@example.org\r\n"
        f"Subject: report {index}\r\nDate: Sun, 29 Nov 2026 02:00:00 +0000\r\n"
        f"Message-ID: <{index}@example.test>\r\n\r\n{body}"
    ).encode()
    signed = dkim_sign(
        dkim_sign(raw, rsa_key(2048), "example.test", "rsa"), ed25519_key(), "example.test", "ed"
    )
    results = b"Authentication-Results: mx.forwarder.test; dmarc=pass\r\n"
    return arc_seal(results + signed, rsa_key(2048), "forwarder.test", "mx.forwarder.test")


async def _measure(checks: list[Check], messages: list[bytes]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {c.name: [] for c in checks}
    for index, raw in enumerate(messages):
        connection = Connection(id=f"c{index}", client_ip="203.0.113.9", helo="mx.sender.test")
        envelope = Envelope(f"bounce{index}@example.test", ("bob@example.org",))
        tx = Transaction(f"t{index}", connection, envelope, raw)
        for check in checks:  # in pipeline order: DMARC reads the others' facts
            started = time.perf_counter()
            result = await check.run(tx)
            timings[check.name].append(time.perf_counter() - started)
            tx = tx.with_results({result.check: result})
    return timings


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"  {name:<6} p50 {statistics.median(ordered) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    server = DnsTestServer().start()
    try:
        _serve(server)
        messages = [_message(i) for i in range(args.messages)]
        for label, cache_entries in (("cache off", 0), ("cache on", 10000)):
            resolver = Resolver([server.address], 1.0, 2.0, cache_entries)
            checks: list[Check] = [
                SpfCheck(resolver, dns_time_s=5.0),
                DkimCheck(resolver),
                ArcCheck(resolver),
                DmarcCheck(resolver),
            ]
            server.clear_queries()
            timings = asyncio.run(_measure(checks, messages))
            total = [sum(t) for t in zip(*timings.values(), strict=True)]
            queries = len(server.queries) / len(messages)
            print(f"{label}: {len(messages)} messages, {queries:.1f} DNS queries per message")
            for name, samples in timings.items():
                print(_row(name, samples))
            print(_row("all", total))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
