"""The typed vocabulary shared by every layer: phases, symbols, results, transactions, verdicts."""

from __future__ import annotations

import email
import email.message
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Literal

from gateway.content import parse_bytes


class Phase(IntEnum):
    """SMTP phases in the order they happen; a check runs in exactly one of them."""

    CONNECT = 1
    HELO = 2
    MAIL = 3
    RCPT = 4
    DATA = 5


class Action(StrEnum):
    """What happens to a message. Declared from mildest to strongest (see `severity`)."""

    ACCEPT = "accept"
    TAG = "tag"  # delivered, marked as probable spam (X-Spam-Flag) for the users' Junk rules
    QUARANTINE = "quarantine"
    TEMPFAIL = "tempfail"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        # A known-bad message is rejected even if another check could not decide;
        # an undecidable one is deferred rather than quarantined on partial evidence.
        return _SEVERITY[self]


_SEVERITY = {
    Action.ACCEPT: 0,
    Action.TAG: 1,
    Action.QUARANTINE: 2,
    Action.TEMPFAIL: 3,
    Action.REJECT: 4,
}


class OnError(StrEnum):
    """What a check's failure means: fail open (`ignore`) or defer the message (`tempfail`)."""

    IGNORE = "ignore"
    TEMPFAIL = "tempfail"


@dataclass(frozen=True, slots=True)
class Symbol:
    """A named finding of a check. `multiplier` in [0, 1] scales the configured score."""

    name: str
    reason: str = ""
    multiplier: float = 1.0


def cut(text: str, max_chars: int = 160) -> str:
    """`text`, ending in "..." where it was longer than `max_chars`: for reasons, which go into
    log lines, the quarantine index and SMTP replies, from text a hostile message chose."""
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def listing(entries: Sequence[str], shown: int = 3, max_chars: int = 160, sep: str = "; ") -> str:
    """Several things named in one reason: the first `shown`, each `cut`, then how many more
    (2000 DKIM signatures made a 250 KB reason)."""
    named = [cut(entry, max_chars) for entry in entries[:shown]]
    more = len(entries) - len(named)
    return sep.join(named) + (f"{sep}and {more} more" if more else "")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found. `facts` carries typed data other checks may read (e.g. SpfFacts)."""

    check: str
    symbols: tuple[Symbol, ...] = ()
    facts: object | None = None
    elapsed_s: float = 0.0
    error: str | None = None


def new_id() -> str:
    """Sortable, unique transaction id: time in ms + random, base32-ish lower hex."""
    return f"{int(time.time() * 1000):011x}{secrets.token_hex(5)}"


@dataclass(slots=True)
class Connection:
    """One SMTP session's client facts; filled in as the session proceeds."""

    id: str
    client_ip: str
    client_port: int = 0
    client_name: str = ""
    helo: str = ""
    esmtp: bool = False  # greeted with EHLO rather than HELO
    tls: bool = False
    started_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope of one transaction."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()
    smtputf8: bool = False


class Transaction:
    """What checks see of one message: connection, envelope, raw bytes and earlier results.

    Read-only for checks. The raw message is parsed at most once, on first use.
    """

    def __init__(
        self,
        id: str,
        connection: Connection,
        envelope: Envelope,
        raw: bytes = b"",
        results: Mapping[str, CheckResult] | None = None,
    ) -> None:
        self.id = id
        self.connection = connection
        self.envelope = envelope
        self.raw = raw
        self._results: dict[str, CheckResult] = dict(results or {})

    @property
    def results(self) -> Mapping[str, CheckResult]:
        return MappingProxyType(self._results)

    def facts(self, check: str) -> object | None:
        """Typed facts another check produced, or None if it did not run or failed."""
        result = self._results.get(check)
        return result.facts if result is not None else None

    def with_results(self, results: Mapping[str, CheckResult]) -> Transaction:
        """A copy that also knows `results` (how the runner adds results; checks never call it)."""
        merged = {**self._results, **results}
        return self._sharing_parse(
            Transaction(self.id, self.connection, self.envelope, self.raw, merged)
        )

    def with_envelope(self, envelope: Envelope) -> Transaction:
        return self._sharing_parse(
            Transaction(self.id, self.connection, envelope, self.raw, self._results)
        )

    def _sharing_parse(self, copy: Transaction) -> Transaction:
        """`copy` (same raw bytes) reuses this one's parsed message, if any: the runner makes
        a copy after every dependency level, and parsing again cost each level milliseconds."""
        if "_message" in self.__dict__:
            copy.__dict__["_message"] = self.__dict__["_message"]
        return copy

    def with_raw(self, raw: bytes) -> Transaction:
        return Transaction(self.id, self.connection, self.envelope, raw, self._results)

    @property
    def message(self) -> email.message.Message:
        """The parsed message (see `parse_message`), parsed on first use. Cached by hand:
        Python 3.11's cached_property holds one lock for all instances while it computes, so
        a large message parsed in a thread blocked every other session's first parse."""
        parsed = self.__dict__.get("_message")
        if parsed is None:
            parsed = self.__dict__["_message"] = parse_message(self.raw)
        return parsed


def parse_message(raw: bytes) -> email.message.Message:
    """A raw message parsed (compat32: tolerant of broken mail, never raises on headers), with
    bounds on MIME parameters, lines and parts: see gateway.content.parse_bytes."""
    return parse_bytes(raw)


@dataclass(frozen=True, slots=True)
class ScoredSymbol:
    """A symbol after scoring: its configured weight times its multiplier."""

    name: str
    score: float
    reason: str
    check: str

    def to_json(self) -> dict[str, str | float]:
        """The form the log line, `scan --json` and `quarantine show --json` share."""
        return {"name": self.name, "score": self.score, "reason": self.reason, "check": self.check}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one message and everything needed to explain it."""

    action: Action
    score: float
    quarantine_at: float
    reject_at: float
    symbols: tuple[ScoredSymbol, ...]
    reason: str
    forced_by: ScoredSymbol | None = None
    reply: str | None = None  # a configured SMTP reply for a forced action, if any
    tag_at: float | None = None  # the junk tag threshold, None when tagging is off
    subject_prefix: str = ""  # put before the Subject of tagged mail ("" = left alone)

    @property
    def is_spam(self) -> bool:
        return self.action in (Action.QUARANTINE, Action.REJECT)

    def symbol_names(self) -> list[str]:
        return [s.name for s in self.symbols]


# --- Typed facts of the email-authentication checks (SPF, DKIM, ARC, DMARC) ------------------

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
DkimResult = Literal["pass", "fail", "neutral", "temperror", "permerror"]
ArcResult = Literal["none", "pass", "fail"]
DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]
DmarcPolicy = Literal["none", "quarantine", "reject"]


@dataclass(frozen=True, slots=True)
class SpfFacts:
    """RFC 7208 result for one identity: the envelope sender, or HELO when the sender is null."""

    result: SpfResult
    identity: Literal["mailfrom", "helo"]
    domain: str  # the domain that was checked (sender's domain or the HELO name)
    client_ip: str
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class DkimSignatureFacts:
    """One DKIM-Signature header and what verifying it gave (RFC 6376)."""

    domain: str  # d=
    selector: str  # s=
    algorithm: str  # a=
    result: DkimResult
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DkimFacts:
    """The DKIM-Signatures of the message verified, in header order, and how many more there
    were (past the check's max_signatures: not verified, so they vouch for nothing)."""

    signatures: tuple[DkimSignatureFacts, ...] = ()
    unverified: int = 0

    def domains_with(self, result: DkimResult) -> tuple[str, ...]:
        return tuple(s.domain for s in self.signatures if s.result == result)


@dataclass(frozen=True, slots=True)
class ArcFacts:
    """The ARC chain (RFC 8617): its validation and, per instance, who sealed it and the DMARC
    result that sealer recorded in its ARC-Authentication-Results (for trusted-sealer overrides)."""

    result: ArcResult
    instances: int = 0
    sealers: tuple[str, ...] = ()  # d= of ARC-Seal i=1..n
    sealer_dmarc: tuple[str, ...] = ()  # dmarc= claimed in ARC-Authentication-Results i=1..n
    reason: str = ""
    sealer_header_from: tuple[str, ...] = ()  # the header.from each of those claims was about

    def summary(self) -> str:
        """The chain as the ARC symbol and Authentication-Results describe it, bounded (up to
        50 sealers, RFC 8617, and a reason that may quote the message)."""
        chain = f"i={self.instances} sealers={listing(self.sealers, 5, 64, ',') or '-'}"
        return chain if self.result == "pass" else f"{chain}: {cut(self.reason, 200)}"


@dataclass(frozen=True, slots=True)
class DmarcFacts:
    """RFC 7489 evaluation for the RFC5322.From domain."""

    result: DmarcResult
    from_domain: str
    policy: DmarcPolicy = "none"  # p= (or sp= for a subdomain) of the record that applied
    disposition: DmarcPolicy = "none"  # what we apply after pct= and overrides
    spf_aligned: bool = False
    dkim_aligned: bool = False
    record_domain: str = ""  # where the record was found (From domain or organisational)
    override: str = ""  # why the policy was not applied (e.g. trusted ARC sealer), if so
