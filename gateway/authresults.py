"""Authentication-Results (RFC 8601): build ours from the checks' facts, and remove incoming
headers that claim our authserv-id (a forger's way to make downstream trust a fake result).

Pure functions on facts and bytes; the SMTP layer calls them when it writes the relayed or
quarantined message.
"""

from __future__ import annotations

import re

from gateway.checks.dmarc import aligned, normalize_domain
from gateway.model import ArcFacts, DkimFacts, DmarcFacts, SpfFacts, Transaction, cut

HEADER_NAME = "Authentication-Results"
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`{|}~@/]+$")  # RFC 2045 token (plus @ and /)
# The sender picks d=, s=, the From domain and (through DNS) SPF explanations. Bounded, every
# entry fits on one line of the folded field, within the 998 characters of RFC 5322: a longer
# line can make the internal server refuse the relayed message. A domain has at most 253.
MAX_VALUE_CHARS = 253
MAX_COMMENT_CHARS = 200


def _comment(text: str) -> str:
    """A header comment: ASCII only, one line, bounded, with ( ) and \\ escaped."""
    words = " ".join(text[: MAX_COMMENT_CHARS * 4].split())
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in cut(words, MAX_COMMENT_CHARS))
    clean = clean.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f" ({clean})" if clean else ""


def _value(text: str) -> str:
    text = cut(text, MAX_VALUE_CHARS)
    if _TOKEN.match(text):
        return text
    clean = "".join(c for c in text if 32 <= ord(c) < 127)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _spf(facts: SpfFacts) -> str:
    ptype = "smtp.helo" if facts.identity == "helo" else "smtp.mailfrom"
    found = f"spf={facts.result}{_comment(f'ip={facts.client_ip} {facts.explanation}')}"
    return f"{found} {ptype}={_value(facts.domain)}" if facts.domain else found


def _dkim(facts: DkimFacts) -> list[str]:
    if not facts.signatures:
        return ["dkim=none"]
    results = []
    for sig in facts.signatures:
        entry = f"dkim={sig.result}"
        if sig.result != "pass":
            entry += _comment(sig.reason)
        if sig.domain:
            entry += f" header.d={_value(sig.domain)}"
        if sig.selector:
            entry += f" header.s={_value(sig.selector)}"
        if sig.algorithm:
            entry += f" header.a={_value(sig.algorithm)}"
        results.append(entry)
    return results


def _arc(facts: ArcFacts) -> str:
    if facts.result == "none":
        return "arc=none"
    return f"arc={facts.result}{_comment(facts.summary())}"


def _dmarc(facts: DmarcFacts) -> str:
    detail = f"p={facts.policy} dis={facts.disposition}" if facts.record_domain else ""
    if facts.override:
        detail = f"{detail} {facts.override}".strip()
    entry = f"dmarc={facts.result}{_comment(detail)}"
    return f"{entry} header.from={_value(facts.from_domain)}" if facts.from_domain else entry


def authentication_results(
    authserv_id: str,
    spf: SpfFacts | None = None,
    dkim: DkimFacts | None = None,
    arc: ArcFacts | None = None,
    dmarc: DmarcFacts | None = None,
) -> list[str]:
    """The parts of an Authentication-Results value: authserv-id, then one resinfo per result
    (`[authserv_id, "none"]` when nothing was checked). Join with "; " for a one-line value."""
    results: list[str] = []
    if spf is not None:
        results.append(_spf(spf))
    if dkim is not None:
        results.extend(_dkim(dkim))
    if arc is not None:
        results.append(_arc(arc))
    if dmarc is not None:
        results.append(_dmarc(dmarc))
    return [authserv_id, *(results or ["none"])]


def sender_authenticated(tx: Transaction) -> bool:
    """Whether the envelope sender's domain vouched for this message: SPF pass for MAIL FROM,
    or a DKIM pass whose d= is aligned (relaxed, RFC 7489 3.1.1) with the sender's domain.
    Notices other than failures go only to such senders."""
    domain = tx.envelope.mail_from.rpartition("@")[2]
    if not domain:
        return False
    spf, dkim = tx.facts("spf"), tx.facts("dkim")
    if (
        isinstance(spf, SpfFacts)
        and spf.result == "pass"
        and spf.identity == "mailfrom"
        and normalize_domain(spf.domain) == normalize_domain(domain)
    ):
        return True
    return isinstance(dkim, DkimFacts) and any(
        aligned(d, domain, strict=False) for d in dkim.domains_with("pass")
    )


def authentication_results_field(authserv_id: str, tx: Transaction) -> str:
    """The complete, folded header field for `tx` from the facts its checks left, without the
    final CRLF (the shape `gateway.smtp.stamp` takes in `extra`)."""
    spf, dkim, arc, dmarc = (tx.facts(name) for name in ("spf", "dkim", "arc", "dmarc"))
    parts = authentication_results(
        authserv_id,
        spf if isinstance(spf, SpfFacts) else None,
        dkim if isinstance(dkim, DkimFacts) else None,
        arc if isinstance(arc, ArcFacts) else None,
        dmarc if isinstance(dmarc, DmarcFacts) else None,
    )
    return f"{HEADER_NAME}: " + ";\r\n\t".join(parts)


def _authserv_id(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value: the first token after any CFWS."""
    text, depth, i = value, 0, 0
    while i < len(text):
        char = text[i : i + 1]
        if depth:
            if char == b"\\":
                i += 1
            elif char == b"(":
                depth += 1
            elif char == b")":
                depth -= 1
        elif char == b"(":
            depth = 1
        elif not char.isspace():
            break
        i += 1
    quoted = re.match(rb'"((?:[^"\\]|\\.)*)"', text[i:])
    if quoted:  # authserv-id is a "value": token or quoted-string (RFC 8601 2.2)
        return re.sub(rb"\\(.)", rb"\1", quoted.group(1))
    match = re.match(rb"[^\s;(]*", text[i:])
    return match.group(0) if match else b""


def _same_host(a: bytes, b: bytes) -> bool:
    """Host names compare case-insensitively and without a trailing root dot."""
    return a.strip().rstrip(b".").lower() == b.strip().rstrip(b".").lower()


def names_authserv_id(value: bytes, authserv_id: str) -> bool:
    """Whether an Authentication-Results value (folded lines included) names `authserv_id`."""
    return _same_host(_authserv_id(value), authserv_id.lower().encode("ascii", "replace"))
