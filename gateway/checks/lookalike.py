"""Look-alike domains (issue 27): From, Reply-To, envelope sender and link hosts that imitate
a brand of rules/brands.toml or one of our own domains ([relay] domains): confusable
characters and mixed scripts (Unicode's confusables data), a brand's domain written at the
start of another, a brand's name inside another domain, small edit distances."""

from __future__ import annotations

from pathlib import Path

from gateway.content import header_addresses, header_str, message_content
from gateway.model import CheckResult, OnError, Phase, Symbol, Transaction
from gateway.phishing import (
    Lookalike,
    clickable_links,
    in_domains,
    load_phishing_data,
    lookalike,
    lure_word,
)
from gateway.pipeline.check import Check
from gateway.urls import is_ip_address, url_host

MAX_LINK_HOSTS = 50  # distinct link hosts compared per message
MAX_REMEMBERED = 20_000  # domains judged and remembered


class LookalikeCheck(Check):
    name = "lookalike"
    phase = Phase.DATA
    symbols = frozenset(
        {
            "LOOKALIKE_FROM",
            "LOOKALIKE_REPLY_TO",
            "LOOKALIKE_SENDER",
            "LOOKALIKE_LINK",
            "LOOKALIKE_MIXED_SCRIPT",
            "LOOKALIKE_LURE_DOMAIN",
        }
    )

    def __init__(
        self,
        rules_dir: Path,
        protected: tuple[str, ...],
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.data = load_phishing_data(rules_dir)
        self.protected = tuple(d.lower() for d in protected)
        # Link hosts repeat from message to message: each is judged once (until SIGHUP).
        self._seen: dict[str, Lookalike | None] = {}

    def _lookalike(self, domain: str) -> Lookalike | None:
        domain = domain.lower().rstrip(".")
        if domain not in self._seen:
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            self._seen[domain] = lookalike(domain, self.data, self.protected)
        return self._seen[domain]

    def _judge(
        self, symbol: str, what: str, domain: str, found: list[Symbol], sender_brand: str = ""
    ) -> None:
        seen = self._lookalike(domain)
        # A brand's own mail (its From domain, which DMARC guards) may link to and bounce
        # through other names of that brand the list lacks (paypal-communication.com).
        if seen is not None and sender_brand and seen.target == sender_brand:
            return
        if seen is None:
            lured = "LOOKALIKE_LURE_DOMAIN"
            word = None if in_domains(domain, self.protected) else lure_word(domain, self.data)
            if word and all(s.name != lured for s in found):
                found.append(Symbol(lured, f"{what}={domain} word={word}"))
            return
        if seen.kind == "mixed-script":
            symbol = "LOOKALIKE_MIXED_SCRIPT"
        if all(s.name != symbol for s in found):
            found.append(Symbol(symbol, _reason(what, domain, seen)))

    async def run(self, tx: Transaction) -> CheckResult:
        found: list[Symbol] = []
        from_values = [header_str(v) for v in tx.message.get_all("From") or []]
        from_addresses = [a for _, a in header_addresses(from_values)[:10] if "@" in a]
        owners = {self.data.owner(a.rpartition("@")[2]) for a in from_addresses}
        owner = owners.pop() if len(owners) == 1 else None
        brand = owner.key if owner is not None else ""
        for address in from_addresses:
            self._judge("LOOKALIKE_FROM", "from", address.rpartition("@")[2], found)
        reply_values = [header_str(v) for v in tx.message.get_all("Reply-To") or []]
        for _, address in header_addresses(reply_values)[:10]:
            if "@" in address:
                domain = address.rpartition("@")[2]
                self._judge("LOOKALIKE_REPLY_TO", "reply-to", domain, found, brand)
        sender = tx.envelope.mail_from or ""
        if "@" in sender:
            self._judge("LOOKALIKE_SENDER", "sender", sender.rpartition("@")[2], found, brand)
        hosts: dict[str, None] = {}
        for anchor in clickable_links(message_content(tx.message)):
            host = url_host(anchor.href) if anchor.href[:4].lower() in ("http", "www.") else None
            if host and not is_ip_address(host):
                hosts[host] = None
            if len(hosts) >= MAX_LINK_HOSTS:
                break
        for host in hosts:
            self._judge("LOOKALIKE_LINK", "link", host, found, brand)
        return self.result(*found)


def _reason(what: str, domain: str, seen: Lookalike) -> str:
    target = f" imitates={seen.target}" if seen.target else ""
    return f"{what}={domain} kind={seen.kind}{target}"
