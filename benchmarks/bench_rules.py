"""Rules and reputation throughput on the SpamAssassin public corpus.

    .venv/bin/python benchmarks/bench_rules.py [--corpus DIR] [--limit N] [--concurrency 16]

Two figures, both on every message of the corpus (ham and spam):
- the rules check alone (decoding, HTML to text, URL extraction, the shipped RE2 rule sets),
  one message at a time: the CPU cost per message;
- the whole reputation set (dnsbl at connect, then lists, rules and uribl at DATA) through the
  pipeline, `--concurrency` messages in flight, every DNS lookup answered by the loopback
  test DNS server (one IP list, one domain list) through the gateway's resolver and its cache.
It also prints how often each rule fires on ham and on spam: a rule that fires on much ham
needs a lower score.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support: the benchmark serves DNS like the tests

from gateway.checks.dnsbl import DnsblCheck  # noqa: E402
from gateway.checks.lists import ListsCheck  # noqa: E402
from gateway.checks.rules import RulesCheck  # noqa: E402
from gateway.checks.uribl import UriblCheck  # noqa: E402
from gateway.config import SHIPPED_RULES_DIR, DnsblCheckConfig  # noqa: E402
from gateway.dnslists import ip_query_name, load_zones  # noqa: E402
from gateway.model import Connection, Envelope, Transaction  # noqa: E402
from gateway.net.dns import Resolver  # noqa: E402
from gateway.pipeline.engine import Pipeline  # noqa: E402
from gateway.pipeline.scoring import load_policy  # noqa: E402
from tests.support.dns_server import DnsTestServer  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "spamassassin-public"
ZONES = """
[zone.bench-ip]
zone = "bl.bench"
kind = "ip"
[zone.bench-ip.answers]
"127.0.0.2" = "DNSBL_SPAMHAUS_SBL"

[zone.bench-domain]
zone = "dbl.bench"
kind = "domain"
[zone.bench-domain.answers]
"127.0.1.2" = "URIBL_SPAMHAUS_DBL"
"""
LISTED_DOMAINS = ("yahoo.com", "hotmail.com", "geocities.com", "msn.com", "aol.com")


def read_corpus(corpus: Path, limit: int) -> list[tuple[str, bytes]]:
    messages = []
    for label in ("ham", "spam"):
        for path in sorted((corpus / label).iterdir())[:limit]:
            messages.append((label, path.read_bytes()))
    return messages


def client_ip(index: int) -> str:
    return f"198.51.{100 + index % 4}.{index % 250 + 1}"


def transaction(index: int, raw: bytes) -> Transaction:
    tx_id = f"bench{index}"
    envelope = Envelope(f"sender{index % 97}@mail{index % 13}.example", ("user@example.test",))
    return Transaction(tx_id, Connection(tx_id, client_ip(index)), envelope, raw)


def serve_zones(server: DnsTestServer) -> None:
    # Every 10th client address is listed; a few common domains are "listed" so answers vary.
    listed_ips = {client_ip(i) for i in range(0, 1000, 10)}
    server.set_zone(
        "bl.bench",
        {ip_query_name(ip, "x").removesuffix(".x"): {"A": ["127.0.0.2"]} for ip in listed_ips},
    )
    server.set_zone("dbl.bench", {domain: {"A": ["127.0.1.2"]} for domain in LISTED_DOMAINS})


def bench_rules_alone(rules: RulesCheck, messages: list[tuple[str, bytes]]) -> Counter[str]:
    hits: Counter[str] = Counter()

    async def run_all() -> None:
        for index, (label, raw) in enumerate(messages):
            result = await rules.run(transaction(index, raw))
            hits.update(f"{label}:{s.name}" for s in result.symbols)

    started, cpu_started = time.perf_counter(), time.process_time()
    asyncio.run(run_all())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"rules check alone (parse, decode, match): {len(messages)} messages in "
        f"{elapsed:.2f}s = {len(messages) / elapsed:.0f} messages/s; CPU "
        f"{1000 * cpu / len(messages):.2f} ms per message = {len(messages) / cpu:.0f}/s per core"
    )
    return hits


async def bench_pipeline(
    pipeline: Pipeline, messages: list[tuple[str, bytes]], concurrency: int
) -> None:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(index: int, raw: bytes) -> None:
        async with gate:
            started = time.perf_counter()
            await pipeline.run_message(transaction(index, raw))
            latencies.append(time.perf_counter() - started)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i, raw) for i, (_, raw) in enumerate(messages)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"dnsbl + lists + rules + uribl with DNS: {len(messages)} messages in {elapsed:.2f}s "
        f"= {len(messages) / elapsed:.0f} messages/s, {concurrency} in flight (CPU, DNS "
        f"server included: {1000 * cpu / len(messages):.2f} ms per message); latency "
        f"p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p95 {1000 * sorted(latencies)[int(0.95 * len(latencies))]:.1f} ms"
    )


def print_rule_hits(hits: Counter[str], messages: list[tuple[str, bytes]]) -> None:
    totals = Counter(label for label, _ in messages)
    names = sorted({key.split(":", 1)[1] for key in hits}, key=lambda n: -hits[f"spam:{n}"])
    print(f"\nrule hits (ham {totals['ham']}, spam {totals['spam']}):")
    for name in names:
        ham, spam = hits[f"ham:{name}"], hits[f"spam:{name}"]
        print(
            f"  {name:34} ham {100 * ham / totals['ham']:5.1f}%  "
            f"spam {100 * spam / totals['spam']:5.1f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=100_000, help="messages per label")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    messages = read_corpus(args.corpus, args.limit)
    rule_files = [SHIPPED_RULES_DIR / "headers.toml", SHIPPED_RULES_DIR / "body.toml"]
    rules = RulesCheck(rule_files)
    hits = bench_rules_alone(rules, messages)

    server = DnsTestServer().start()
    try:
        serve_zones(server)
        with tempfile.TemporaryDirectory() as tmp:
            zones_file = Path(tmp) / "dnsbl.toml"
            zones_file.write_text(ZONES)
            resolver = Resolver(
                [server.address], timeout_s=1.0, lifetime_s=2.0, cache_entries=10_000
            )
            checks = [
                DnsblCheck(
                    load_zones(zones_file, "ip"),
                    resolver,
                    skip_networks=DnsblCheckConfig().skip_networks,
                ),
                ListsCheck(SHIPPED_RULES_DIR / "lists.toml"),
                RulesCheck(rule_files),
                UriblCheck(load_zones(zones_file, "domain"), resolver),
            ]
            pipeline = Pipeline(checks, load_policy(SHIPPED_RULES_DIR), deadline_s=30.0)
            asyncio.run(bench_pipeline(pipeline, messages, args.concurrency))
        print(
            f"DNS queries answered by the loopback server: {len(server.queries)} "
            f"(the rest came from the resolver's cache)"
        )
    finally:
        server.stop()
    print_rule_hits(hits, messages)


if __name__ == "__main__":
    main()
