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

from gateway.authresults import names_authserv_id

SPAM_PREFIX = b"x-spam-"
_AUTH_RESULTS = b"authentication-results"


def is_ours(name: bytes, value: bytes, authserv_id: str) -> bool:
    """Whether the field `name: value` (value with its folded lines) is one only we write."""
    lowered = name.strip().lower()
    if lowered.startswith(SPAM_PREFIX):
        return True
    return lowered == _AUTH_RESULTS and names_authserv_id(value, authserv_id)


def _header_lines(raw: bytes) -> tuple[list[bytes], int]:
    """The lines of the header section (each with its line end) and where the rest starts
    (the empty line that ends it, kept as it is with the body). Only the header is split: a
    25 MB body is not turned into a list of lines."""
    lines: list[bytes] = []
    position = 0
    while position < len(raw):
        end = raw.find(b"\n", position)
        end = len(raw) if end == -1 else end + 1
        line = raw[position:end]
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
        position = end
    return lines, position


def _fields(lines: list[bytes]) -> list[tuple[int, int]]:
    """(first line, end line) of each field; a line that is neither a field nor a
    continuation (no colon) is a field of its own that no test matches."""
    spans: list[tuple[int, int]] = []
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t") and spans:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


def remove_our_fields(raw: bytes, authserv_id: str, *, below_our_stamp: bool = False) -> bytes:
    """`raw` without the fields only we write; everything else byte for byte (DKIM signatures
    over other fields still verify).

    `below_our_stamp`: `raw` is a message we stamped (a quarantined one), whose own fields
    down to our Received (the first Received: `gateway.smtp.stamp` puts it last of ours, on
    top) are kept, and only the copies below them removed. With no Received field at all,
    nothing counts as ours and every such field goes."""
    head_end = raw.find(b"\r\n\r\n")
    head = raw if head_end == -1 else raw[:head_end]
    if SPAM_PREFIX not in head.lower() and _AUTH_RESULTS not in head.lower():
        return raw  # the usual case: nothing to remove, nothing split
    lines, rest = _header_lines(raw)
    spans = _fields(lines)
    first = 0
    if below_our_stamp:
        for number, (start, _end) in enumerate(spans):
            if lines[start].partition(b":")[0].strip().lower() == b"received":
                first = number + 1
                break
    kept: list[bytes] = []
    for number, (start, end) in enumerate(spans):
        name, colon, value = lines[start].partition(b":")
        field_value = value + b"".join(lines[start + 1 : end])
        if number >= first and colon and is_ours(name, field_value, authserv_id):
            continue
        kept.extend(lines[start:end])
    return b"".join(kept) + raw[rest:]
