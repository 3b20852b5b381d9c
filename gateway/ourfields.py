"""The header fields only the gateway may write: every `X-Spam-*` field and the
Authentication-Results that name our authserv-id (RFC 8601 section 5).

A copy that arrives from outside is a forgery as far as the internal server can tell (Sieve
and Outlook rules, and people, read them): a spammer marks spam clean, anyone marks a
colleague's mail as spam. SpamAssassin and rspamd likewise remove what they write themselves.
The checks and the quarantine still see them (they are evidence); they are removed from what
is relayed: the spool copy, a released quarantined message and a returned copy in a DSN.

Any name that starts with `X-Spam-`, whatever its case and with the obsolete white space
before the colon, folded or not. Other filters' fields with other names (rspamd's
`X-Spamd-Result`, `X-Rspamd-*`, another host's Authentication-Results) are kept.
"""

from __future__ import annotations

import re

from gateway.authresults import names_authserv_id

SPAM_PREFIX = b"x-spam-"
_AUTH_RESULTS = b"authentication-results"


def is_ours(name: bytes, value: bytes, authserv_id: str) -> bool:
    """Whether the field `name: value` (value with its folded lines) is one only we write."""
    lowered = name.strip().lower()
    if lowered.startswith(SPAM_PREFIX):
        return True
    return lowered == _AUTH_RESULTS and names_authserv_id(value, authserv_id)


def _header_end(raw: bytes) -> int:
    """Where the empty line that ends the header section starts (CRLF or LF), or the end."""
    if raw.startswith((b"\r\n", b"\n")):
        return 0
    found = _EMPTY_LINE.search(raw)
    return found.start() + 1 if found else len(raw)


# A field that may be ours, with its folded lines: name (obsolete space before the colon
# allowed), value through the line end. Regular expressions, not a loop over lines: a 24 MB
# message that is all header took 7.7 s of the event loop line by line.
_CANDIDATE = re.compile(
    rb"^(?P<name>x-spam-[^:\r\n]*|authentication-results[ \t]*):"
    rb"(?P<value>[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)",
    re.IGNORECASE | re.MULTILINE,
)
_RECEIVED = re.compile(rb"^received[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*", re.I | re.M)
_EMPTY_LINE = re.compile(rb"\n\r?\n")


def remove_our_fields(raw: bytes, authserv_id: str, *, below_our_stamp: bool = False) -> bytes:
    """`raw` without the fields only we write; everything else byte for byte (DKIM signatures
    over other fields still verify).

    `below_our_stamp`: `raw` is a message we stamped (a quarantined one), whose own fields
    down to our Received (the first Received: `gateway.smtp.stamp` puts it last of ours, on
    top) are kept, and only the copies below them removed. With no Received field at all,
    nothing counts as ours and every such field goes."""
    end = _header_end(raw)
    first = 0
    if below_our_stamp:
        received = _RECEIVED.search(raw, 0, end)
        first = received.end() if received else 0
    kept: list[bytes] = []
    position = first
    for match in _CANDIDATE.finditer(raw, first, end):
        if is_ours(match["name"], match["value"], authserv_id):
            kept.append(raw[position : match.start()])
            position = match.end()
    if position == first:
        return raw  # the usual case: nothing removed, nothing copied
    return raw[:first] + b"".join(kept) + raw[position:]
