"""URIBL/RHSBL: registered domains of the message's URLs, of the envelope sender and of the
From header, looked up in the `kind = "domain"` zones of rules/dnsbl.toml."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.content import decode_header_value, header_addresses, message_content
from gateway.dnslists import Zone, ZoneClient
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check
from gateway.urls import content_domains, registered_domain

ZONE_ERROR = "URIBL_ZONE_ERROR"


def _address_domain(address: str) -> str | None:
    _, _, domain = address.rpartition("@")
    return registered_domain(domain) if domain else None


class UriblCheck(Check):
    name = "uribl"
    phase = Phase.DATA
    symbols = frozenset({ZONE_ERROR})  # plus the zones' own symbols: see all_symbols()

    def __init__(
        self,
        zones: Sequence[Zone],
        resolver: Resolver,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        max_domains: int = 20,
        failures_before_pause: int = 3,
        pause_s: float = 300.0,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.clients = [
            ZoneClient(zone, resolver, ZONE_ERROR, failures_before_pause, pause_s) for zone in zones
        ]
        self.max_domains = max_domains

    def all_symbols(self) -> frozenset[str]:
        zone_symbols = (c.zone.symbols() for c in self.clients)
        return super().all_symbols().union(*zone_symbols)

    def domains(self, tx: Transaction) -> dict[str, list[str]]:
        """Registered domain -> where it was found (url, sender, from), at most max_domains."""
        found: dict[str, list[str]] = {}

        def add(domain: str | None, source: str) -> None:
            if domain is not None and source not in found.setdefault(domain, []):
                found[domain].append(source)

        add(_address_domain(tx.envelope.mail_from), "sender")
        from_values = [decode_header_value(v) for v in tx.message.get_all("From") or []]
        for _, address in header_addresses(from_values):
            add(_address_domain(address), "from")
        for domain in content_domains(message_content(tx.message), self.max_domains):
            if len(found) >= self.max_domains and domain not in found:
                break
            add(domain, "url")
        return found

    async def run(self, tx: Transaction) -> CheckResult:
        queries = []
        for domain, sources in self.domains(tx).items():
            subject = f"domain={domain} in={'+'.join(sources)}"
            for client in self.clients:
                if any(source in client.zone.domains for source in sources):
                    queries.append(client.query(f"{domain}.{client.zone.zone}", subject))
        found: list[list[Symbol]] = list(await asyncio.gather(*queries))
        unique: dict[str, Symbol] = {}
        for symbols in found:
            for symbol in symbols:
                # Once per symbol, so five listed links do not score five times; the first
                # listed domain explains it.
                unique.setdefault(symbol.name, symbol)
        return self.result(*unique.values())
