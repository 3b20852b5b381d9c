"""DNSBL/DNSWL: the client IP looked up in the `kind = "ip"` zones of rules/dnsbl.toml at
connect. A listing is a symbol; rules/actions.toml may force a reject on it (554 at connect)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

from gateway.dnslists import Zone, ZoneClient, client_address, ip_query_name
from gateway.model import CheckResult, OnError, Phase, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check

ZONE_ERROR = "DNSBL_ZONE_ERROR"


class DnsblCheck(Check):
    name = "dnsbl"
    phase = Phase.CONNECT
    symbols = frozenset({ZONE_ERROR})  # plus the zones' own symbols: see all_symbols()

    def __init__(
        self,
        zones: Sequence[Zone],
        resolver: Resolver,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        skip_networks: Sequence[str] = (),
        failures_before_pause: int = 3,
        pause_s: float = 300.0,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.clients = [
            ZoneClient(zone, resolver, ZONE_ERROR, failures_before_pause, pause_s) for zone in zones
        ]
        self.skip_networks = [ipaddress.ip_network(n) for n in skip_networks]

    def all_symbols(self) -> frozenset[str]:
        zone_symbols = (c.zone.symbols() for c in self.clients)
        return super().all_symbols().union(*zone_symbols)

    def _skipped(self, ip: str) -> bool:
        """Addresses no public list can know (and need not learn of): private, loopback."""
        try:
            address = client_address(ip)
        except ValueError:  # no client IP, e.g. an offline scan without --client-ip
            return True
        return any(address in network for network in self.skip_networks)

    async def run(self, tx: Transaction) -> CheckResult:
        ip = tx.connection.client_ip
        if self._skipped(ip):
            return self.result()
        found = await asyncio.gather(
            *(c.query(ip_query_name(ip, c.zone.zone), f"ip={ip}") for c in self.clients)
        )
        return self.result(*(symbol for symbols in found for symbol in symbols))


class DnsblAtRcptCheck(DnsblCheck):
    """The same lookups at each RCPT ([checks.dnsbl] phase = "rcpt"): a forced reject then
    refuses recipients instead of the connection, so the log shows who sent to whom
    (postscreen's late reject). Repeated lookups come from the resolver's cache."""

    phase = Phase.RCPT
