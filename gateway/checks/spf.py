"""SPF (RFC 7208) at MAIL FROM: the envelope sender, or the HELO name when the sender is null.

pyspf does the evaluation (macros, includes, the 10-lookup and 2-void-lookup limits); its DNS
goes through our Resolver. pyspf resolves through its module-level `spf.DNSLookup`, so that is
replaced once, here, by a function that uses the Resolver of the evaluation running in the
current context (a ContextVar, set per evaluation): it never falls back to another resolver.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal, get_args

import spf as pyspf

from gateway.errors import CheckError, DnsError, ThreadsBusy
from gateway.model import CheckResult, OnError, Phase, SpfFacts, SpfResult, Symbol, Transaction
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check

_RESULTS: frozenset[str] = frozenset(get_args(SpfResult))
_current_resolver: ContextVar[Resolver | None] = ContextVar("spf_resolver", default=None)

PyspfRecord = tuple[tuple[str, str], object]
# Where an SPF temperror is acted on: at MAIL FROM (SPF_TEMPERROR, 451 by actions.toml), or at
# the end of DATA, where DMARC lets an aligned DKIM pass through and defers the rest.
TemperrorAt = Literal["mail", "data"]
DEFERRED_SYMBOL = "SPF_TEMPERROR_DEFERRED"


def _pyspf_values(qtype: str, records: tuple[str, ...]) -> list[object]:
    """Our presentation text -> the value shapes pyspf's dnspython driver produces."""
    if qtype in ("TXT", "SPF"):
        return [(text.encode("utf-8"),) for text in records]
    if qtype == "MX":
        values: list[object] = []
        for text in records:
            preference, _, exchange = text.partition(" ")
            values.append((int(preference), exchange.rstrip(".")))
        return values
    if qtype in ("PTR", "CNAME"):
        return [text.rstrip(".") for text in records]
    return list(records)  # A, AAAA: the address text


def _dns_lookup(
    name: str, qtype: str, strict: object = True, timeout: float | None = None
) -> list[PyspfRecord]:
    """pyspf's DNS hook. `timeout` is what is left of the evaluation's DNS time budget."""
    resolver = _current_resolver.get()
    if resolver is None:
        raise pyspf.TempError("no resolver configured for SPF")
    try:
        answer = resolver.lookup_sync(name, qtype, lifetime_s=timeout)
    except DnsError as exc:
        raise pyspf.TempError(f"DNS {exc}") from exc
    return [((name, qtype), value) for value in _pyspf_values(qtype, answer.records)]


pyspf.DNSLookup = _dns_lookup


def evaluate_spf(
    resolver: Resolver, client_ip: str, sender: str, helo: str, dns_time_s: float
) -> SpfFacts:
    """Blocking SPF evaluation through `resolver`; DNS time in total bounded by `dns_time_s`."""
    token = _current_resolver.set(resolver)
    try:
        try:
            query = pyspf.query(
                i=client_ip, s=sender, h=helo, timeout=dns_time_s, querytime=dns_time_s
            )
        except pyspf.PermError as exc:  # only raised for an unusable client address
            raise CheckError(f"client address {client_ip!r}: {exc}") from exc
        result, _code, explanation = query.check()
    finally:
        _current_resolver.reset(token)
    if result not in _RESULTS:
        raise CheckError(f"pyspf returned unknown result {result!r}")
    identity: Literal["mailfrom", "helo"] = "helo" if query.ident == "helo" else "mailfrom"
    return SpfFacts(result, identity, str(query.o), client_ip, str(explanation))


def spf_symbol(facts: SpfFacts) -> Symbol:
    reason = f"{facts.identity}={facts.domain} ip={facts.client_ip}"
    if facts.explanation:
        reason += f": {facts.explanation}"
    return Symbol(f"SPF_{facts.result.upper()}", reason)


class SpfCheck(Check):
    name = "spf"
    phase = Phase.MAIL
    symbols = frozenset({*(f"SPF_{r.upper()}" for r in _RESULTS), DEFERRED_SYMBOL})

    def __init__(
        self,
        resolver: Resolver,
        dns_time_s: float,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        temperror_at: TemperrorAt = "mail",
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.resolver = resolver
        self.dns_time_s = dns_time_s
        self.temperror_at = temperror_at

    async def run(self, tx: Transaction) -> CheckResult:
        sender, helo = tx.envelope.mail_from, tx.connection.helo
        if not sender and not helo:
            facts = SpfFacts("none", "helo", "", tx.connection.client_ip, "no identity to check")
            return self.result(spf_symbol(facts), facts=facts)
        try:
            facts = await self.resolver.run_blocking(
                tx.connection.client_ip,
                evaluate_spf,
                self.resolver,
                tx.connection.client_ip,
                sender,
                helo,
                self.dns_time_s,
            )
        except ThreadsBusy as exc:  # other sessions of this client hold its threads
            return self._temperror(tx, str(exc))
        return self._with_symbol(facts)

    def timeout_result(self, tx: Transaction, why: str) -> CheckResult:
        """RFC 7208 4.6.4: an evaluation that runs out of time is a temperror, whatever held
        it up (DNS, or the wait for a thread), never an SPF_ERROR that scores 0."""
        return self._temperror(tx, why)

    def _temperror(self, tx: Transaction, why: str) -> CheckResult:
        sender, helo = tx.envelope.mail_from, tx.connection.helo
        identity: Literal["mailfrom", "helo"] = "mailfrom" if sender else "helo"
        domain = sender.rpartition("@")[2] if sender else helo
        facts = SpfFacts("temperror", identity, domain, tx.connection.client_ip, why)
        return self._with_symbol(facts)

    def _with_symbol(self, facts: SpfFacts) -> CheckResult:
        symbol = spf_symbol(facts)
        if facts.result == "temperror" and self.temperror_at == "data":
            # Decided at the end of DATA by DMARC: an aligned DKIM pass lets the mail go on.
            symbol = Symbol(DEFERRED_SYMBOL, symbol.reason)
        return self.result(symbol, facts=facts)
