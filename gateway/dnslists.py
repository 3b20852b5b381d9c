"""DNS lists (DNSBL, DNSWL, RHSBL, URIBL): their configuration in rules/dnsbl.toml, the names
queried, what an answer means, and a circuit breaker per zone.

    [zone.NAME]                     # NAME shows in reasons and in the 554 reply
    zone = "zen.spamhaus.org"       # the DNS zone queried
    kind = "ip"                     # ip: the client IP (dnsbl check, at connect);
                                    # domain: URL, sender and From domains (uribl check)
    enabled = false
    match = "exact"                 # exact: the answer must equal a key of [answers];
                                    # bitmask: a key's last octet is a bit of the answer's
    domains = ["url", "sender", "from"]  # kind = "domain" only: which domains to look up
    error_answers = ["127.0.0.1"]   # answers that mean "query refused" for this list
    [zone.NAME.answers]
    "127.0.0.2" = "DNSBL_SPAMHAUS_SBL"
    any = "DNSBL_SPAMHAUS_OTHER"    # optional: any other valid answer

An answer outside 127.0.0.0/8, in 127.255.255.0/24 (Spamhaus's error codes) or in
`error_answers` is a zone error, never a listing.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from gateway.errors import ConfigError, DnsError
from gateway.files import is_upper_snake, read_toml
from gateway.model import Symbol
from gateway.net.dns import Resolver

log = logging.getLogger(__name__)

Kind = Literal["ip", "domain"]
DomainSource = Literal["url", "sender", "from"]
DOMAIN_SOURCES: tuple[str, ...] = get_args(DomainSource)
SYMBOL_PREFIXES: dict[str, tuple[str, ...]] = {
    "ip": ("DNSBL_", "DNSWL_"),
    "domain": ("URIBL_", "RHSBL_"),
}
ANY_ANSWER = "any"
_LISTING_NETWORK = ipaddress.IPv4Network("127.0.0.0/8")
_ERROR_NETWORK = ipaddress.IPv4Network("127.255.255.0/24")
_ZONE_KEYS = frozenset({"zone", "kind", "enabled", "match", "domains", "error_answers", "answers"})


@dataclass(frozen=True)
class Zone:
    name: str
    zone: str
    kind: Kind
    answers: dict[str, str]  # answer address (or "any") -> symbol
    match: Literal["exact", "bitmask"] = "exact"
    domains: tuple[str, ...] = DOMAIN_SOURCES  # kind "domain": which of DOMAIN_SOURCES
    error_answers: frozenset[str] = frozenset()

    def symbols(self) -> frozenset[str]:
        return frozenset(self.answers.values())

    def symbols_for(self, answer: ipaddress.IPv4Address) -> list[str]:
        """The symbols a valid answer stands for (empty if the list does not map it)."""
        if self.match == "bitmask":
            bits = int(answer) & 0xFF
            found = [
                s
                for k, s in self.answers.items()
                if k != ANY_ANSWER and int(ipaddress.IPv4Address(k)) & 0xFF & bits
            ]
        else:
            found = [self.answers[str(answer)]] if str(answer) in self.answers else []
        if not found and ANY_ANSWER in self.answers:
            found = [self.answers[ANY_ANSWER]]
        return found


def client_address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The client's address, an IPv4-mapped IPv6 one (::ffff:1.2.3.4) as the IPv4 it is;
    ValueError for something that is no address."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_query_name(ip: str, zone: str) -> str:
    """1.2.3.4 -> 4.3.2.1.zone; IPv6 -> 32 reversed nibbles.zone; IPv4-mapped IPv6 as IPv4."""
    address = client_address(ip)
    reversed_name = address.reverse_pointer.rsplit(".", 2)[0]  # drop in-addr.arpa / ip6.arpa
    return f"{reversed_name}.{zone}"


def _parse_zone(name: str, table: Any, where: str, problems: list[str]) -> Zone | None:
    before = len(problems)
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table")
        return None
    if unknown := set(table) - _ZONE_KEYS:
        problems.append(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_ZONE_KEYS)})")
    zone = table.get("zone")
    if not isinstance(zone, str) or "." not in zone.strip(".") or " " in zone:
        problems.append(f"{where}.zone: a DNS zone name is required, e.g. 'zen.spamhaus.org'")
    kind = table.get("kind")
    if kind not in SYMBOL_PREFIXES:
        problems.append(f"{where}.kind: {kind!r} is not one of 'ip', 'domain'")
    if not isinstance(table.get("enabled", True), bool):
        problems.append(f"{where}.enabled: expected true or false")
    match = table.get("match", "exact")
    if match not in ("exact", "bitmask"):
        problems.append(f"{where}.match: {match!r} is not one of 'exact', 'bitmask'")
    domains = table.get("domains", list(DOMAIN_SOURCES))
    if not isinstance(domains, list) or not domains or set(domains) - set(DOMAIN_SOURCES):
        problems.append(f"{where}.domains: a non-empty list of {', '.join(DOMAIN_SOURCES)}")
    elif kind == "ip" and "domains" in table:
        problems.append(f"{where}.domains: only used with kind = 'domain'")
    error_answers = table.get("error_answers", [])
    if not isinstance(error_answers, list) or not all(_is_ipv4(a) for a in error_answers):
        problems.append(f"{where}.error_answers: a list of IPv4 addresses")
    answers = table.get("answers")
    if not isinstance(answers, dict) or not answers:
        problems.append(f"{where}.answers: a table of answer address -> symbol is required")
        answers = {}
    prefixes = SYMBOL_PREFIXES.get(str(kind), ())
    for answer, symbol in answers.items():
        if answer != ANY_ANSWER and not (
            _is_ipv4(answer) and ipaddress.IPv4Address(answer) in _LISTING_NETWORK
        ):
            problems.append(f"{where}.answers: {answer!r} is not an address in 127.0.0.0/8")
        if not is_upper_snake(symbol) or not symbol.startswith(prefixes):
            problems.append(
                f"{where}.answers.{answer}: {symbol!r} must be an UPPER_SNAKE symbol starting "
                f"with {' or '.join(prefixes) or 'the prefix of its kind'}"
            )
    if len(problems) > before:
        return None
    return Zone(
        name=name,
        zone=str(zone).strip(".").lower(),
        kind=cast(Kind, kind),
        answers=dict(answers),
        match=match,
        domains=tuple(domains),
        error_answers=frozenset(error_answers),
    )


def _is_ipv4(value: Any) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def load_zones(path: Path, kind: Kind, include_disabled: bool = False) -> list[Zone]:
    """The enabled zones of `kind` in `path` (all of them with `include_disabled`); every zone
    is validated, enabled or not."""
    problems: list[str] = []
    data = read_toml(path)
    if unknown := set(data) - {"zone"}:
        problems.append(f"{path}: unknown tables {sorted(unknown)} (lists go in [zone.NAME])")
    zones = []
    for name, table in data.get("zone", {}).items():
        zone = _parse_zone(name, table, f"{path}: zone.{name}", problems)
        enabled = include_disabled or table.get("enabled", True)
        if zone is not None and zone.kind == kind and enabled:
            zones.append(zone)
    if problems:
        raise ConfigError(problems)
    return zones


class ZoneClient:
    """Queries one zone; turns answers into symbols; pauses the zone when it keeps failing.

    Timeouts, server errors and error answers count as failures; `failures_before_pause`
    in a row pause the zone for `pause_s` (logged), so a dead list costs no time per message.
    """

    def __init__(
        self,
        zone: Zone,
        resolver: Resolver,
        error_symbol: str,
        failures_before_pause: int = 3,
        pause_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.zone = zone
        self.resolver = resolver
        self.error_symbol = error_symbol
        self.failures_before_pause = failures_before_pause
        self.pause_s = pause_s
        self._clock = clock
        self._failures = 0
        self._paused_until = 0.0

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    async def query(self, name: str, subject: str) -> list[Symbol]:
        """Look `name` up; `subject` ("ip=1.2.3.4") starts every reason."""
        zone = self.zone
        if self.paused:
            return [Symbol(self.error_symbol, f"{subject} zone={zone.zone} paused after failures")]
        if not _fits_dns(name):  # the message's fault, not the list's: never counts as failure
            return []
        try:
            # One query, no retries: a list's failure fails open, and at connect a retry
            # against a silent resolver held the banner for the whole lifetime (5 s).
            answer = await self.resolver.lookup(name, "A", lifetime_s=self.resolver.timeout_s)
        except DnsError as exc:
            return self._failed(f"{subject} zone={zone.zone} {exc}")
        if answer.status != "ok":
            self._failures = 0
            return []
        return self._classify(answer.records, subject)

    def _classify(self, records: Sequence[str], subject: str) -> list[Symbol]:
        zone = self.zone
        found: dict[str, Symbol] = {}
        for record in records:
            error = self._answer_error(record)
            if error is not None:
                return self._failed(f"{subject} zone={zone.zone} answer={record} ({error})")
            for symbol in zone.symbols_for(ipaddress.IPv4Address(record)):
                reason = f"{subject} listed by {zone.zone} ({record})"
                found.setdefault(symbol, Symbol(symbol, reason))
        self._failures = 0
        return list(found.values())

    def _answer_error(self, record: str) -> str | None:
        if not _is_ipv4(record):
            return "not an IPv4 address"
        address = ipaddress.IPv4Address(record)
        if address not in _LISTING_NETWORK:
            return "outside 127.0.0.0/8"
        if address in _ERROR_NETWORK or record in self.zone.error_answers:
            return "an error code of the list"
        return None

    def _failed(self, reason: str) -> list[Symbol]:
        self._failures += 1
        if self._failures >= self.failures_before_pause:
            self._paused_until = self._clock() + self.pause_s
            self._failures = 0
            log.warning(
                "DNS list %s (%s) paused for %gs after %d failures in a row; last: %s",
                self.zone.name,
                self.zone.zone,
                self.pause_s,
                self.failures_before_pause,
                reason,
            )
        return [Symbol(self.error_symbol, reason)]


def _fits_dns(name: str) -> bool:
    """Whether `name` can be asked at all: labels of 1-63 octets, 253 in all."""
    labels = name.rstrip(".").split(".")
    return len(name.rstrip(".")) <= 253 and all(0 < len(label) <= 63 for label in labels)
