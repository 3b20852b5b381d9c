"""DMARC (RFC 7489): the RFC5322.From domain's policy, applied to SPF and DKIM alignment.

Reads the SPF, DKIM and ARC checks' facts. The record is looked up at _dmarc.<From domain>,
else at the organisational domain (public suffix list shipped with `publicsuffixlist`: no
network). The record is parsed here (section 6.3): checkdmarc's parser also queries DNS for
report-URI authorisation with its own resolver, which the decision does not need.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from dataclasses import dataclass

from gateway.content import header_addresses, header_str, unfold
from gateway.errors import DnsError
from gateway.model import (
    ArcFacts,
    CheckResult,
    DkimFacts,
    DmarcFacts,
    DmarcPolicy,
    OnError,
    Phase,
    SpfFacts,
    Symbol,
    Transaction,
)
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check
from gateway.urls import suffix_list

log = logging.getLogger(__name__)

_POLICIES: tuple[DmarcPolicy, ...] = ("none", "quarantine", "reject")
_ONE_LESS_STRICT: dict[DmarcPolicy, DmarcPolicy] = {
    "reject": "quarantine",
    "quarantine": "none",
    "none": "none",
}


def normalize_domain(domain: str) -> str:
    """Lower case, no final dot, A-labels: an SMTPUTF8 From domain compares with DKIM's d=."""
    domain = domain.lower().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain  # not a valid IDN: compared as written, so it aligns with nothing else


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label (the domain itself if it is a suffix)."""
    domain = normalize_domain(domain)
    return suffix_list().privatesuffix(domain) or domain


def aligned(identifier: str, from_domain: str, strict: bool) -> bool:
    identifier, from_domain = normalize_domain(identifier), normalize_domain(from_domain)
    if strict:
        return identifier == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


@dataclass(frozen=True)
class DmarcRecord:
    policy: DmarcPolicy
    subdomain_policy: DmarcPolicy
    strict_dkim: bool = False
    strict_spf: bool = False
    pct: int = 100


class MalformedRecord(ValueError):
    """The record is v=DMARC1 but has no usable policy."""


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC record (RFC 7489 6.3). Invalid optional tags fall back to their defaults
    (6.3: "syntax errors in the remainder of the record SHOULD be discarded")."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1":
        raise MalformedRecord("v=DMARC1 missing")
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        # 6.6.3: a record with an invalid p= but a report address counts as p=none.
        if "rua" in tags and "mailto:" in tags["rua"].lower():
            policy = "none"
        else:
            raise MalformedRecord(f"invalid p={tags.get('p', '')!r}")
    subdomain_policy = tags.get("sp", "").lower()
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    return DmarcRecord(
        policy=_as_policy(policy),
        subdomain_policy=_as_policy(subdomain_policy)
        if subdomain_policy in _POLICIES
        else _as_policy(policy),
        strict_dkim=tags.get("adkim", "r").lower() == "s",
        strict_spf=tags.get("aspf", "r").lower() == "s",
        pct=pct if 0 <= pct <= 100 else 100,
    )


def _as_policy(value: str) -> DmarcPolicy:
    for policy in _POLICIES:
        if policy == value:
            return policy
    raise MalformedRecord(f"invalid policy {value!r}")


def from_domains(tx: Transaction) -> list[str]:
    """The domains of every address in every From header (DMARC needs exactly one). A word
    without "@" beside one real address is a display name with an unquoted comma
    ("Mustermann, Erika <erika@...>"), not a second author: it names no domain to spoof."""
    values = [header_str(v) for v in tx.message.get_all("From") or []]
    domains = [
        normalize_domain(address.rpartition("@")[2]) if "@" in address else ""
        for _name, address in header_addresses(values)
    ]
    named = [d for d in domains if d]
    return named if len(named) == 1 else domains


def is_dns_name(domain: str) -> bool:
    """An A-label domain that DNS can hold (RFC 1035 lengths); else it can have no record."""
    labels = domain.split(".")
    return domain.isascii() and len(domain) <= 253 and all(0 < len(label) <= 63 for label in labels)


class DmarcCheck(Check):
    name = "dmarc"
    phase = Phase.DATA
    requires = ("spf", "dkim", "arc")
    symbols = frozenset(
        {
            "DMARC_PASS",
            "DMARC_FAIL",
            "DMARC_QUARANTINE",
            "DMARC_REJECT",
            "DMARC_NONE",
            "DMARC_TEMPERROR",
            "DMARC_PERMERROR",
            "DMARC_BAD_FROM",
            "DMARC_ARC_OVERRIDE",
        }
    )

    def __init__(
        self,
        resolver: Resolver,
        trusted_arc_sealers: tuple[str, ...] = (),
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        decides_spf_temperror: bool = False,
    ) -> None:
        """`decides_spf_temperror`: SPF left its temperror to us ([checks.spf] temperror_at =
        "data"): an aligned DKIM pass lets the mail go on, anything else is DMARC_TEMPERROR."""
        super().__init__(timeout_s, on_error)
        self.resolver = resolver
        self.trusted_arc_sealers = frozenset(s.lower().rstrip(".") for s in trusted_arc_sealers)
        self.decides_spf_temperror = decides_spf_temperror

    async def run(self, tx: Transaction) -> CheckResult:
        domains = from_domains(tx)
        if len(domains) != 1 or not is_dns_name(domains[0]):
            why = (
                f"{len(domains)} From addresses"
                if len(domains) != 1
                else "From has no domain"
                if not domains[0]
                else f"From domain {domains[0]!r} is not a domain name"
            )
            facts = DmarcFacts("permerror", "", override=why)
            return self._deciding_spf(tx, facts, Symbol("DMARC_BAD_FROM", why))
        facts = await self.evaluate(tx, domains[0])
        return self._deciding_spf(tx, facts, dmarc_symbol(facts))

    def _deciding_spf(self, tx: Transaction, facts: DmarcFacts, symbol: Symbol) -> CheckResult:
        """The result, or DMARC_TEMPERROR when an SPF temperror was left to us and no aligned
        DKIM pass makes up for it (without a DMARC record: relaxed alignment, as p= would)."""
        spf, dkim = tx.facts("spf"), tx.facts("dkim")
        if not self.decides_spf_temperror or facts.result == "pass":
            return self.result(symbol, facts=facts)
        if not isinstance(spf, SpfFacts) or spf.result != "temperror":
            return self.result(symbol, facts=facts)
        from_domain = facts.from_domain
        if from_domain and isinstance(dkim, DkimFacts):
            signers = dkim.domains_with("pass")
            if any(aligned(d, from_domain, strict=False) for d in signers):
                return self.result(symbol, facts=facts)
        why = f"SPF temperror ({spf.explanation}) and no aligned DKIM pass; DMARC: {symbol.name}"
        log.warning("dmarc on transaction %s: %s", tx.id, why)
        deferred = dataclasses.replace(facts, result="temperror", override=why)
        return self.result(dmarc_symbol(deferred), facts=deferred)

    def timeout_result(self, tx: Transaction, why: str) -> CheckResult | None:
        """An SPF temperror left to us must not be let through by our own timeout."""
        spf = tx.facts("spf")
        if not self.decides_spf_temperror or not isinstance(spf, SpfFacts):
            return None
        if spf.result != "temperror":
            return None
        reason = f"SPF temperror ({spf.explanation}) and DMARC {why}"
        facts = DmarcFacts("temperror", "", override=reason)
        return self.result(Symbol("DMARC_TEMPERROR", reason), facts=facts)

    async def _find_record(self, from_domain: str) -> tuple[str, str] | None:
        """(record text, where it was found), or None. Raises DnsError, MalformedRecord."""
        org = organizational_domain(from_domain)
        for domain in dict.fromkeys((from_domain, org)):
            answer = await self.resolver.lookup(f"_dmarc.{domain}", "TXT")
            records = [r for r in answer.records if r.replace(" ", "").startswith("v=DMARC1")]
            if len(records) > 1:
                raise MalformedRecord(f"{len(records)} DMARC records at _dmarc.{domain}")
            if records:
                return records[0], domain
        return None

    async def evaluate(self, tx: Transaction, from_domain: str) -> DmarcFacts:
        spf, dkim, arc = tx.facts("spf"), tx.facts("dkim"), tx.facts("arc")
        try:
            found = await self._find_record(from_domain)
            if found is None:
                return DmarcFacts("none", from_domain)
            record_text, record_domain = found
            record = parse_record(record_text)
        except DnsError as exc:
            # An identifier equal to the From domain is aligned under any record: no need to
            # defer mail whose record we cannot read if it passes that way.
            spf_exact = (
                isinstance(spf, SpfFacts)
                and spf.result == "pass"
                and (spf.domain.lower() == from_domain)
            )
            dkim_exact = isinstance(dkim, DkimFacts) and from_domain in (
                d.lower() for d in dkim.domains_with("pass")
            )
            if spf_exact or dkim_exact:
                return DmarcFacts("pass", from_domain, "none", "none", spf_exact, dkim_exact)
            return DmarcFacts("temperror", from_domain, override=f"record lookup: {exc}")
        except MalformedRecord as exc:
            return DmarcFacts("permerror", from_domain, override=str(exc))

        spf_ok = (
            isinstance(spf, SpfFacts)
            and spf.result == "pass"
            and aligned(spf.domain, from_domain, record.strict_spf)
        )
        dkim_ok = isinstance(dkim, DkimFacts) and any(
            aligned(d, from_domain, record.strict_dkim) for d in dkim.domains_with("pass")
        )
        policy = record.policy if record_domain == from_domain else record.subdomain_policy
        base = DmarcFacts("pass", from_domain, policy, "none", spf_ok, dkim_ok, record_domain)
        if spf_ok or dkim_ok:
            return base
        # An aligned identifier we could not check might have passed: not a failure (yet).
        unsure = self._unsure(tx, from_domain, record)
        if unsure and policy != "none":  # p=none: nothing to enforce, nothing to defer
            log.warning("dmarc on transaction %s: temperror, not a fail: %s", tx.id, unsure)
            return dataclasses.replace(base, result="temperror", override=unsure)
        vouched = self._trusted_sealer_vouches(arc, from_domain)
        if vouched:
            return dataclasses.replace(base, result="fail", override=vouched)
        sampled = random.Random(tx.id).random() * 100 < record.pct
        disposition = policy if sampled else _ONE_LESS_STRICT[policy]
        return dataclasses.replace(base, result="fail", disposition=disposition)

    def _unsure(self, tx: Transaction, from_domain: str, record: DmarcRecord) -> str:
        """Why an aligned pass might exist that we could not see, or "". A check that timed
        out or crashed gave no facts: that is not "no pass" (DESIGN section 3). An attacker
        slowing our threads down must not turn a legitimate sender's mail into a reject."""
        spf, dkim = tx.facts("spf"), tx.facts("dkim")
        if (
            isinstance(spf, SpfFacts)
            and spf.result == "temperror"
            and aligned(spf.domain, from_domain, record.strict_spf)
        ) or (
            isinstance(dkim, DkimFacts)
            and any(
                aligned(d, from_domain, record.strict_dkim) for d in dkim.domains_with("temperror")
            )
        ):
            return "aligned SPF/DKIM had a DNS error"
        if failed := _failure(tx, "spf"):
            sender, helo = tx.envelope.mail_from, tx.connection.helo
            identity = sender.rpartition("@")[2] if sender else helo
            if identity and aligned(identity, from_domain, record.strict_spf):
                return f"spf check failed ({failed}): an aligned SPF pass is possible"
        if failed := _failure(tx, "dkim"):
            signers = signing_domains(tx)
            if signers is None or any(aligned(d, from_domain, record.strict_dkim) for d in signers):
                return f"dkim check failed ({failed}): an aligned DKIM pass is possible"
        failed = _failure(tx, "arc")
        if failed and self.trusted_arc_sealers and "ARC-Seal" in tx.message:
            return f"arc check failed ({failed}): a trusted sealer might vouch"
        return ""

    def _trusted_sealer_vouches(self, arc: object, from_domain: str) -> str:
        """RFC 8617 7.2.1: a validated chain whose newest seal is a trusted forwarder's that
        saw dmarc=pass for this From domain. Older seals do not count: whoever added the
        newer ones may have changed From and the body after the trusted hop."""
        if not isinstance(arc, ArcFacts) or arc.result != "pass" or not arc.sealers:
            return ""
        sealer, claimed = arc.sealers[-1], arc.sealer_dmarc[-1]
        claimed_from = arc.sealer_header_from[-1] if arc.sealer_header_from else ""
        if sealer in self.trusted_arc_sealers and claimed == "pass" and claimed_from == from_domain:
            return f"trusted ARC sealer {sealer} saw dmarc=pass for {from_domain}"
        return ""


def _failure(tx: Transaction, check: str) -> str:
    """The error of `check` when it ran and gave no facts (timed out, crashed), else ""."""
    result = tx.results.get(check)
    if result is None or result.facts is not None:
        return ""
    return result.error or "no result"


_D_TAG = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.IGNORECASE)


def signing_domains(tx: Transaction) -> list[str] | None:
    """The d= of every DKIM-Signature, read without verifying anything; None when one has
    no readable d= (it might be aligned)."""
    domains = []
    for value in tx.message.get_all("DKIM-Signature") or []:
        found = _D_TAG.search(unfold(header_str(value)))
        if found is None:
            return None
        domains.append(found.group(1))
    return domains


def dmarc_symbol(facts: DmarcFacts) -> Symbol:
    where = f"from={facts.from_domain}"
    if facts.record_domain:
        where += f" record=_dmarc.{facts.record_domain} p={facts.policy}"
    if facts.result == "pass":
        via = [
            name for name, ok in (("spf", facts.spf_aligned), ("dkim", facts.dkim_aligned)) if ok
        ]
        return Symbol("DMARC_PASS", f"{where} aligned={'+'.join(via)}")
    if facts.result in ("none", "temperror", "permerror"):
        detail = f": {facts.override}" if facts.override else ""
        return Symbol(f"DMARC_{facts.result.upper()}", f"{where}{detail}")
    if facts.override:
        return Symbol("DMARC_ARC_OVERRIDE", f"{where} fail overridden: {facts.override}")
    reason = f"{where} no aligned SPF or DKIM pass, disposition={facts.disposition}"
    if facts.disposition == "reject":
        return Symbol("DMARC_REJECT", reason)
    if facts.disposition == "quarantine":
        return Symbol("DMARC_QUARANTINE", reason)
    return Symbol("DMARC_FAIL", reason)
