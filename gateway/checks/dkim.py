"""DKIM (RFC 6376): verify every DKIM-Signature (up to max_signatures), not only the first,
with dkimpy.

Each signature gets its own result (a fact DMARC reads). dkimpy reports most problems as a bare
False, so the key lookup goes through a hook that records what DNS said, and dkimpy's log lines
give the reason. A signature whose l= leaves part of the body unsigned is `neutral`: content
could have been appended, so it must not vouch for the message.
"""

from __future__ import annotations

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import InvalidTagValueList, parse_tag_value

from gateway.checks.dkimpy_adapter import KeyLookups, LogLines, private_logger
from gateway.content import header_str, unfold
from gateway.errors import ThreadsBusy
from gateway.model import (
    CheckResult,
    DkimFacts,
    DkimResult,
    DkimSignatureFacts,
    OnError,
    Phase,
    Symbol,
    Transaction,
    cut,
    listing,
)
from gateway.net.dns import Resolver
from gateway.pipeline.check import Check

DKIM_RESULTS: tuple[DkimResult, ...] = ("pass", "fail", "neutral", "permerror", "temperror")


def _unsigned_tail(verifier: dkim.DKIM, tags: dict[bytes, bytes]) -> int:
    """Body bytes after the l= limit: content anyone could have appended."""
    if b"l" not in tags:
        return 0
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
        body = policy.canonicalize_body(verifier.body)
        return max(0, len(body) - int(tags[b"l"]))
    except (ValueError, dkim.DKIMException):
        return 0  # a malformed c= or l= already failed verification


def verify_signature(
    verifier: dkim.DKIM, index: int, header: bytes, lookups: KeyLookups, log: LogLines
) -> DkimSignatureFacts:
    try:
        tags = parse_tag_value(header)
    except InvalidTagValueList as exc:
        return DkimSignatureFacts("", "", "", "permerror", cut(f"unparseable signature: {exc}"))
    domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
    selector = tags.get(b"s", b"").decode("ascii", "replace")
    algorithm = tags.get(b"a", b"").decode("ascii", "replace")

    def facts(result: DkimResult, reason: str) -> DkimSignatureFacts:
        return DkimSignatureFacts(domain, selector, algorithm, result, cut(reason))

    log.lines.clear()
    lookups.last = ""
    try:
        valid = verifier.verify(idx=index, dnsfunc=lookups)
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return facts("fail", "body hash mismatch (body changed)")
        return facts("permerror", str(exc))
    except Exception as exc:  # dkimpy lets crypto errors on hostile input escape (nacl, asn1)
        return facts("permerror", f"{type(exc).__name__}: {exc}")
    if valid:
        unsigned = _unsigned_tail(verifier, tags)
        if unsigned:
            return facts("neutral", f"l= leaves {unsigned} body bytes unsigned")
        return facts("pass", "signature verified")
    if lookups.last.startswith("dns-error"):
        return facts("temperror", lookups.last)
    if lookups.last == "missing":
        return facts("permerror", "no key published for the selector")
    if lookups.last == "revoked":
        return facts("fail", "key revoked (empty p=)")
    if log.lines:
        return facts("permerror", log.lines[-1])
    return facts("fail", "signature did not verify (headers changed)")


def verify_dkim(
    raw: bytes,
    resolver: Resolver,
    min_rsa_bits: int,
    max_signatures: int = 10,
    dns_time_s: float = 8.0,
) -> DkimFacts:
    """Verify the first `max_signatures` DKIM-Signatures of `raw`, their key lookups within
    `dns_time_s` together (blocking: DNS and RSA happen here)."""
    log = LogLines()
    try:
        verifier = dkim.DKIM(raw, logger=private_logger(log), minkey=min_rsa_bits)
    except (dkim.DKIMException, IndexError) as exc:  # IndexError: a first line folded
        if b"dkim-signature" not in raw.lower():
            return DkimFacts()
        bad = DkimSignatureFacts("", "", "", "permerror", cut(f"malformed message: {exc}"))
        return DkimFacts((bad,))
    headers = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    lookups = KeyLookups(resolver, dns_time_s)
    verified = headers[:max_signatures]
    return DkimFacts(
        tuple(verify_signature(verifier, i, h, lookups, log) for i, h in enumerate(verified)),
        unverified=len(headers) - len(verified),
    )


def dkim_symbols(facts: DkimFacts) -> list[Symbol]:
    """One symbol per result that occurred; its reason names the signatures that had it."""
    if not facts.signatures:
        return [Symbol("DKIM_NONE", "no DKIM-Signature")]
    symbols = []
    for result in DKIM_RESULTS:
        found = [s for s in facts.signatures if s.result == result]
        if found:
            entries = [f"d={s.domain} s={s.selector} a={s.algorithm}: {s.reason}" for s in found]
            symbols.append(Symbol(f"DKIM_{result.upper()}", listing(entries)))
    if facts.unverified:
        verified, more = len(facts.signatures), facts.unverified
        reason = (
            f"{verified + more} DKIM-Signatures: the {more} after the first {verified} not verified"
        )
        symbols.append(Symbol("DKIM_LIMIT", reason))
    return symbols


class DkimCheck(Check):
    name = "dkim"
    phase = Phase.DATA
    symbols = frozenset({"DKIM_NONE", "DKIM_LIMIT", *(f"DKIM_{r.upper()}" for r in DKIM_RESULTS)})

    def __init__(
        self,
        resolver: Resolver,
        min_rsa_bits: int = 1024,
        timeout_s: float = 10.0,
        on_error: OnError = OnError.IGNORE,
        max_signatures: int = 10,
        dns_time_s: float = 8.0,
    ) -> None:
        super().__init__(timeout_s, on_error)
        self.resolver = resolver
        self.min_rsa_bits = min_rsa_bits
        self.max_signatures = max_signatures
        self.dns_time_s = dns_time_s

    async def run(self, tx: Transaction) -> CheckResult:
        if "DKIM-Signature" not in tx.message:  # most mail: no thread hop for nothing
            facts = DkimFacts()
        else:
            try:
                facts = await self.resolver.run_blocking(
                    tx.connection.client_ip,
                    verify_dkim,
                    tx.raw,
                    self.resolver,
                    self.min_rsa_bits,
                    self.max_signatures,
                    self.dns_time_s,
                )
            except ThreadsBusy as exc:  # other sessions of this client hold its threads
                facts = self._unverified(tx, str(exc))
        return self.result(*dkim_symbols(facts), facts=facts)

    def timeout_result(self, tx: Transaction, why: str) -> CheckResult:
        """Out of time (DNS, or the wait for a thread): each signature is a temperror, which
        DMARC defers on where it aligns, never "no pass"."""
        facts = self._unverified(tx, why)
        return self.result(*dkim_symbols(facts), facts=facts)

    def _unverified(self, tx: Transaction, why: str) -> DkimFacts:
        """Every signature (up to max_signatures) as a temperror: who signed is read from its
        tags, nothing is verified."""
        values = tx.message.get_all("DKIM-Signature") or []
        signatures = []
        for value in values[: self.max_signatures]:
            try:
                tags = parse_tag_value(unfold(header_str(value)).encode("utf-8", "replace"))
            except InvalidTagValueList as exc:
                reason = cut(f"unparseable signature: {exc}")
                signatures.append(DkimSignatureFacts("", "", "", "permerror", reason))
                continue
            signatures.append(
                DkimSignatureFacts(
                    tags.get(b"d", b"").decode("ascii", "replace").lower(),
                    tags.get(b"s", b"").decode("ascii", "replace"),
                    tags.get(b"a", b"").decode("ascii", "replace"),
                    "temperror",
                    cut(f"not verified: {why}"),
                )
            )
        return DkimFacts(tuple(signatures), unverified=max(0, len(values) - self.max_signatures))
