"""ARC (RFC 8617): validate the chain of ARC sets that forwarders added, with dkimpy.

The facts keep, per instance, who sealed it and the DMARC result that sealer recorded, so the
DMARC check can let a configured trusted forwarder vouch for mail whose SPF and DKIM it broke.
"""

from __future__ import annotations

import re

import dkim

from gateway.checks.dkimpy_adapter import KeyLookups, LogLines, private_logger
from gateway.model import (
    ArcFacts,
    ArcResult,
    CheckResult,
    OnError,
    Phase,
    Symbol,
    Transaction,
)
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check

# The dmarc result entry of an ARC-Authentication-Results value: a "dmarc=" that starts an
# entry (not one inside another entry's property such as smtp.mailfrom=dmarc=pass@...), and
# the header.from it was about.
_DMARC_IN_AAR = re.compile(rb"(?:^|;)\s*dmarc\s*=\s*([a-z]+)([^;]*)", re.IGNORECASE)
_HEADER_FROM = re.compile(rb"\bheader\.from\s*=\s*([^\s;()]+)", re.IGNORECASE)


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


ARC_HEADERS = ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results")


def verify_arc(
    raw: bytes, resolver: Resolver, min_rsa_bits: int, dns_time_s: float = 8.0
) -> ArcFacts:
    """Validate the ARC chain of `raw`, its key lookups within `dns_time_s` together
    (blocking: DNS and signature checks happen here)."""
    lookups = KeyLookups(resolver, dns_time_s)
    try:
        arc = dkim.ARC(raw, logger=private_logger(LogLines()), minkey=min_rsa_bits)
        verdict, instances, why = arc.verify(dnsfunc=lookups)
    except Exception as exc:  # dkimpy lets crypto errors on hostile input escape (nacl, asn1)
        if b"arc-seal" not in raw.lower():
            return ArcFacts("none")  # a message dkimpy cannot split into headers, no ARC
        return ArcFacts("fail", reason=f"malformed ARC set: {type(exc).__name__}: {exc}")
    if verdict == dkim.CV_None:
        return ArcFacts("none")
    ordered = sorted(instances, key=lambda i: int(i["instance"]))  # oldest (i=1) first
    sealers = tuple(_text(i.get("as-domain")).lower() for i in ordered)
    claims, claimed_froms = [], []
    for instance in ordered:
        found = _DMARC_IN_AAR.search(instance.get("aar-value") or b"")
        claims.append(_text(found.group(1)).lower() if found else "")
        header_from = _HEADER_FROM.search(found.group(2)) if found else None
        claimed_froms.append(_text(header_from.group(1)).lower() if header_from else "")
    reason = _text(why)
    if lookups.last.startswith("dns-error"):
        reason += f" ({lookups.last})"
    result: ArcResult = "pass" if verdict == dkim.CV_Pass else "fail"
    return ArcFacts(result, len(ordered), sealers, tuple(claims), reason, tuple(claimed_froms))


def arc_symbol(facts: ArcFacts) -> Symbol:
    if facts.result == "none":
        return Symbol("ARC_NONE", "no ARC sets")
    return Symbol("ARC_PASS" if facts.result == "pass" else "ARC_FAIL", facts.summary())


class ArcCheck(Check):
    name = "arc"
    phase = Phase.DATA
    symbols = frozenset({"ARC_PASS", "ARC_FAIL", "ARC_NONE"})

    def __init__(
        self,
        resolver: Resolver,
        min_rsa_bits: int = 1024,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        dns_time_s: float = 8.0,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.resolver = resolver
        self.min_rsa_bits = min_rsa_bits
        self.dns_time_s = dns_time_s

    async def run(self, tx: Transaction) -> CheckResult:
        if not any(name in tx.message for name in ARC_HEADERS):  # no chain: nothing to verify
            facts = ArcFacts("none")
        else:
            # No thread within the wait (ThreadsBusy) is this check's error: DMARC then defers.
            facts = await self.resolver.run_blocking(
                tx.connection.client_ip,
                verify_arc,
                tx.raw,
                self.resolver,
                self.min_rsa_bits,
                self.dns_time_s,
            )
        return self.result(arc_symbol(facts), facts=facts)
