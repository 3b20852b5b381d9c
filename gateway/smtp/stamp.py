"""The header fields the gateway prepends to mail it accepts or quarantines.

Top to bottom: `extra` lines from the DATA checks (Authentication-Results, RFC 8601 5: above
our Received), X-Spam-Score, X-Spam-Status, then our Received (RFC 5321 4.4). Lines end in CRLF.

X-Spam-Status follows SpamAssassin's shape, `Yes|No, score=S required=R symbols=A,B`:
`required` is the quarantine threshold, so "Yes" means exactly "held or refused as spam"
(score at or above `required`, or an action forced by a symbol); `symbols=none` when empty.
Mail at or above the junk tag threshold (actions.toml `tag`) is delivered with
`X-Spam-Flag: YES` as well, the field users' Junk rules look for (docs/junk-tag.md), and with
`[tag] subject_prefix` before its Subject when one is set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from ipaddress import ip_address

from gateway.model import Action, Transaction, Verdict

FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_HELO_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")


# A header field line (RFC 5322 2.2: printable ASCII name, colon; obsolete space before it).
_FIELD_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")


def stamp(raw: bytes, headers: Sequence[str]) -> bytes:
    """`raw` with `headers` (complete "Name: value" fields, possibly folded) prepended.

    A message whose first line is not a header field (no header section at all, or a line
    starting with white space) gets an empty line after ours: otherwise its first line would
    be read as one of our fields, or as a continuation of our Received, downstream."""
    ours = b"".join(h.encode("utf-8") + b"\r\n" for h in headers)
    if raw and not raw.startswith(b"\r\n") and not _FIELD_LINE.match(raw):
        ours += b"\r\n"
    return ours + raw


def gateway_headers(
    tx: Transaction, verdict: Verdict, hostname: str, extra: Sequence[str] = ()
) -> list[str]:
    """Every field we add, in order. `extra` is where result headers of checks go."""
    return [*extra, *spam_headers(verdict), received(tx, hostname)]


def spam_headers(verdict: Verdict) -> list[str]:
    flag = "Yes" if verdict.is_spam else "No"
    names = ",".join(dict.fromkeys(verdict.symbol_names())) or "none"
    status = f"{flag}, score={verdict.score:.2f} required={verdict.quarantine_at:.2f}"
    tagged = ["X-Spam-Flag: YES"] if verdict.action is Action.TAG else []
    return [
        *tagged,
        f"X-Spam-Score: {verdict.score:.2f}",
        fold(f"X-Spam-Status: {status} symbols={names}", ","),
    ]


_SUBJECT = re.compile(rb"(?im)^subject[ \t]*:[ \t]?")


def prefix_subject(raw: bytes, prefix: str) -> bytes:
    """`raw` with `prefix` put before its first Subject's text, or a Subject of just the
    prefix added when it has none. Only the header section is searched."""
    if not prefix:
        return raw
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    match = _SUBJECT.search(head)
    text = prefix.encode("utf-8")
    if match is None:
        return stamp(raw, [f"Subject: {prefix.rstrip()}"])
    return raw[: match.end()] + text + raw[match.end() :]


def received(tx: Transaction, hostname: str, now: datetime | None = None) -> str:
    """`Received: from HELO ([ip]) by us with PROTO id TXID for <rcpt>; date` (RFC 5321 4.4).

    No reverse DNS here: the client is named by its IP literal only. `for` appears only with a
    single recipient, so one recipient's address is not shown to the others.
    """
    connection = tx.connection
    helo = _HELO_UNSAFE.sub("?", connection.helo)[:255] or "unknown"
    parts = [
        f"Received: from {helo} ({address_literal(connection.client_ip)})",
        f"by {hostname} with {protocol(tx)} id {tx.id}",
    ]
    date = format_datetime(now or datetime.now(UTC))
    if len(tx.envelope.rcpt_tos) == 1:
        parts.append(f"for <{tx.envelope.rcpt_tos[0]}>; {date}")
    else:
        parts[-1] += ";"
        parts.append(date)
    return "\r\n\t".join(parts)


def protocol(tx: Transaction) -> str:
    """The `with` keyword (RFC 3848, RFC 6531): ESMTP, ESMTPS, UTF8SMTP, UTF8SMTPS or SMTP."""
    if tx.envelope.smtputf8:
        base = "UTF8SMTP"
    elif tx.connection.esmtp:
        base = "ESMTP"
    else:
        base = "SMTP"
    return base + ("S" if tx.connection.tls else "")


def address_literal(ip: str) -> str:
    """RFC 5321 4.1.3: `[192.0.2.1]` or `[IPv6:2001:db8::1]`."""
    return f"[IPv6:{ip}]" if ip_address(ip).version == 6 else f"[{ip}]"


def fold(field: str, separator: str) -> str:
    """Fold a long field after `separator` characters so no line passes FOLD_AT when avoidable."""
    if len(field) <= FOLD_AT:
        return field
    lines: list[str] = []
    current = ""
    for piece in re.split(f"(?<={re.escape(separator)})", field):
        if current and len(current) + len(piece) > FOLD_AT:
            lines.append(current)
            current = "\t" + piece
        else:
            current += piece
    lines.append(current)
    return "\r\n".join(lines)
