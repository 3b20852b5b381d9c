"""Allow and block lists (rules/lists.toml): client IP/CIDR, envelope sender, From domain,
recipient.

    [allow]                    # and the same four keys under [block]
    client_ips = ["192.0.2.0/24", "2001:db8::1"]
    senders = ["news@example.org", "partner.example"]  # an address, or a domain (+ subdomains)
    from_domains = ["example.org"]                     # the From header's domain (+ subdomains)
    recipients = ["abuse@example.test"]                # an address, or a domain

A match is only a symbol (LIST_ALLOW_* scored negative, LIST_BLOCK_* positive in
rules/scores.toml): an allowed sender is still rejected when a forced action says so (a
virus, GTUBE), and nothing here bypasses the relay gate. Sender and From can be forged, so
prefer allowing client IPs, or keep allow scores moderate.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.content import header_addresses, header_str
from gateway.dnslists import client_address
from gateway.errors import ConfigError
from gateway.files import read_toml
from gateway.model import CheckResult, DmarcFacts, OnError, Phase, SpfFacts, Symbol, Transaction
from gateway.pipeline.check import Check

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_KEYS = ("client_ips", "senders", "from_domains", "recipients")
_SYMBOL_PART = {
    "client_ips": "CLIENT_IP",
    "senders": "SENDER",
    "from_domains": "FROM",
    "recipients": "RCPT",
}


@dataclass(frozen=True)
class AddressList:
    """Addresses matched exactly, domains matched with their subdomains; all lower-case."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    def match(self, address: str) -> str | None:
        """The entry `address` (or a bare domain) matches, or None."""
        address = address.strip().strip("<>").lower()
        if address in self.addresses:
            return address
        domain = address.rpartition("@")[2].rstrip(".")
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self.domains:
                return candidate
        return None


@dataclass(frozen=True)
class Lists:
    client_ips: tuple[Network, ...] = ()
    senders: AddressList = field(default_factory=AddressList)
    from_domains: AddressList = field(default_factory=AddressList)
    recipients: AddressList = field(default_factory=AddressList)


def _address_list(
    values: list[Any], where: str, problems: list[str], domains_only: bool
) -> AddressList:
    addresses: set[str] = set()
    domains: set[str] = set()
    for value in values:
        entry = value.strip().lower() if isinstance(value, str) else ""
        local, at, domain = entry.rpartition("@")
        domain = domain.strip(".")
        if not entry or " " in entry or "." not in domain or (at and not local):
            problems.append(f"{where}: {value!r} is not an address or a domain")
        elif at and domains_only:
            problems.append(f"{where}: {value!r}: only domains here")
        elif at:
            addresses.add(f"{local}@{domain}")
        else:
            domains.add(domain)
    return AddressList(frozenset(addresses), frozenset(domains))


def _section(table: Any, where: str, problems: list[str]) -> Lists:
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table")
        return Lists()
    if unknown := set(table) - set(_KEYS):
        problems.append(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(_KEYS)})")
    for key in _KEYS:
        if not isinstance(table.get(key, []), list):
            problems.append(f"{where}.{key}: expected a list")
            return Lists()
    networks = []
    for value in table.get("client_ips", []):
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            problems.append(f"{where}.client_ips: {value!r} is not an IP address or network")
    return Lists(
        client_ips=tuple(networks),
        senders=_address_list(table.get("senders", []), f"{where}.senders", problems, False),
        from_domains=_address_list(
            table.get("from_domains", []), f"{where}.from_domains", problems, True
        ),
        recipients=_address_list(
            table.get("recipients", []), f"{where}.recipients", problems, False
        ),
    )


def load_lists(path: Path) -> tuple[Lists, Lists]:
    """(allow, block) from `path`; ConfigError with one line per problem."""
    data = read_toml(path)
    problems: list[str] = []
    if unknown := set(data) - {"allow", "block"}:
        problems.append(f"{path}: unknown tables {sorted(unknown)} (known: allow, block)")
    allow = _section(data.get("allow", {}), f"{path}: allow", problems)
    block = _section(data.get("block", {}), f"{path}: block", problems)
    if problems:
        raise ConfigError(problems)
    return allow, block


def _client_ip_match(networks: Iterable[Network], ip: str) -> str | None:
    try:
        address = client_address(ip)
    except ValueError:
        return None
    for network in networks:
        if address in network:
            return str(network)
    return None


class ListsCheck(Check):
    name = "lists"
    phase = Phase.DATA
    requires = ("dmarc",)  # allowing a From domain needs DMARC's verdict on it
    symbols = frozenset(
        f"LIST_{verdict}_{part}" for verdict in ("ALLOW", "BLOCK") for part in _SYMBOL_PART.values()
    )

    def __init__(
        self, path: Path, timeout_s: float = 10.0, on_error: OnError = OnError.IGNORE
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.path = path
        self._allow, self._block = load_lists(path)  # a broken file stops startup

    async def run(self, tx: Transaction) -> CheckResult:
        # Parsed raw, as DMARC parses it: decoding first would let an encoded display name
        # ("=?utf-8?q?ceo=40partner.example?=") pose as an address.
        from_values = [header_str(v) for v in tx.message.get_all("From") or []]
        from_addresses = [a for _, a in header_addresses(from_values) if a]
        found: list[Symbol] = []
        for verdict, lists in (("ALLOW", self._allow), ("BLOCK", self._block)):
            allowing = verdict == "ALLOW"
            if entry := _client_ip_match(lists.client_ips, tx.connection.client_ip):
                found.append(
                    Symbol(
                        f"LIST_{verdict}_CLIENT_IP", f"ip={tx.connection.client_ip} entry={entry}"
                    )
                )
            sender_ok = not allowing or _spf_passed(tx)  # a forged sender earns no bonus
            if (
                tx.envelope.mail_from
                and sender_ok
                and (entry := lists.senders.match(tx.envelope.mail_from))
            ):
                found.append(
                    Symbol(
                        f"LIST_{verdict}_SENDER", f"sender={tx.envelope.mail_from} entry={entry}"
                    )
                )
            # Allowing a From needs one From address that DMARC authenticated.
            from_ok = not allowing or (len(from_addresses) == 1 and _dmarc_passed(tx))
            for address in from_addresses if from_ok else []:
                if entry := lists.from_domains.match(address):
                    found.append(Symbol(f"LIST_{verdict}_FROM", f"from={address} entry={entry}"))
                    break
            # One listed recipient must not decide for the others (a spamtrap in Cc, or an
            # allowed abuse@ added to spam): only a message for listed recipients alone counts.
            matches = [lists.recipients.match(rcpt) for rcpt in tx.envelope.rcpt_tos]
            if matches and all(matches):
                rcpts = ",".join(tx.envelope.rcpt_tos)
                found.append(Symbol(f"LIST_{verdict}_RCPT", f"rcpt={rcpts} entry={matches[0]}"))
        return self.result(*found)


def _spf_passed(tx: Transaction) -> bool:
    facts = tx.facts("spf")
    return isinstance(facts, SpfFacts) and facts.result == "pass"


def _dmarc_passed(tx: Transaction) -> bool:
    facts = tx.facts("dmarc")
    return isinstance(facts, DmarcFacts) and facts.result == "pass"
