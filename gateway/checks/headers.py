"""Header sanity: the RFC 5322 basics that legitimate mail software gets right."""

from __future__ import annotations

import email.message
import email.policy
import re
from email.errors import HeaderParseError, NonASCIILocalPartDefect, ObsoleteHeaderDefect

from gateway.content import header_addresses, header_str, unfold
from gateway.model import CheckResult, Phase, Symbol, Transaction
from gateway.pipeline.check import Check

ADDRESS_HEADERS = ("From", "Sender", "Reply-To", "To", "Cc")
_header_factory = email.policy.default.header_factory

# The forms nearly all mail uses: `user@host.tld`, `Name <user@host.tld>`, `"Name" <...>`,
# comma-separated. They are well-formed by construction; anything else gets the full parser,
# which is accurate but costs about 0.1 ms per header.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{{2,}}"
_WORD = r"[A-Za-z0-9.'_-]+"
_NAME = rf'(?:{_WORD}(?:[ \t]+{_WORD})*|"[^"\\\r\n]*")'
# Each mailbox matches one way only and is never re-entered (atomic group, possessive
# spaces): with `\s*` both after the comma and before "<", folding white space could be
# split between them in ways that multiplied per address, and a list failing at its end
# took exponential time (16 folded addresses and a broken tail: minutes).
_MAILBOX = rf"(?>{_ADDR}|(?:{_NAME}\s*+)?<{_ADDR}>)"
FAST_PATH_MAX_CHARS = 2000
# The strict parser is superlinear on hostile values (100 KB of backslashes in From: minutes
# on the event loop, 16 KB: 1.7 s; a 1 MB To list: 40 s; 300 To fields of 16 KB: 36 s).
# Longer values, and every value once a message has used up its budget, get the tolerant
# parser, which only tells whether every entry has a domain.
STRICT_PARSER_MAX_CHARS = 4_000
STRICT_PARSER_BUDGET_CHARS = 32_000
# Even tolerantly, 300 To fields of 16 KB took 2 s on the event loop: address text past this
# much per message is not looked at (a malformed address is a spam sign, not a danger).
CHECKED_ADDRESS_MAX_CHARS = 256 * 1024
_SIMPLE_LIST = re.compile(rf"\s*+{_MAILBOX}(?:\s*+,\s*+{_MAILBOX})*+\s*+")


def _long_list_problem(value: str) -> str | None:
    # An empty group ("undisclosed-recipients:;") reads as an empty entry: not a defect.
    addresses = [address for _, address in header_addresses([value]) if address]
    without_domain = sum("@" not in address for address in addresses)
    if not addresses or without_domain:
        return f"unparseable: {without_domain} of {len(addresses)} entries without a domain"
    return None


def address_problem(name: str, value: str, strict: bool = True) -> str | None:
    """Why an address header is malformed, or None when it parses into real addresses;
    `strict=False` (the message's strict-parser budget is spent) reads it tolerantly."""
    if len(value) <= FAST_PATH_MAX_CHARS and _SIMPLE_LIST.fullmatch(value):
        return None
    if not strict or len(value) > STRICT_PARSER_MAX_CHARS:
        return _long_list_problem(value)
    try:
        header = _header_factory(name, value)
        addresses = getattr(header, "addresses", ())
    except (HeaderParseError, IndexError, ValueError) as exc:
        return f"unparseable: {exc}"
    except RecursionError:  # the parser recurses once per nested comment
        return "unparseable: comments nested too deep"
    except AttributeError:  # stdlib bug on text after a group's ";" ('Group' ... 'local_part')
        return "unparseable: text after an address group"
    except Exception as exc:  # the stdlib parser's own bugs on hostile values
        # TypeError ("Cc: (c) .)"), UnboundLocalError ("=?utf-8?q?a?=@[ "), AssertionError...
        # found by tests/fuzz_headers.py: a malformed address, not a failed check.
        return f"unparseable: the parser failed ({type(exc).__name__})"
    # Obsolete syntax (RFC 5322 section 4, e.g. "John Q. Public" unquoted) must be accepted by
    # receivers and is what the fast path above lets through too; only real defects count.
    # UTF-8 in a local part is RFC 6532 (SMTPUTF8) mail, not a defect.
    defects = [
        d
        for d in header.defects
        if not isinstance(d, ObsoleteHeaderDefect | NonASCIILocalPartDefect)
    ]
    if defects:
        return "; ".join(str(d) for d in defects)[:200]
    if name in ("From", "Sender") and not addresses:
        return "no address"
    for address in addresses:
        if not address.username or not address.domain or "." not in address.domain:
            return f"not a full address: {address.addr_spec!r}"
    return None


class HeadersCheck(Check):
    name = "headers"
    phase = Phase.DATA
    symbols = frozenset(
        {
            "HDR_MISSING_FROM",
            "HDR_MULTIPLE_FROM",
            "HDR_MISSING_DATE",
            "HDR_MISSING_MESSAGE_ID",
            "HDR_MALFORMED_ADDRESS",
        }
    )

    async def run(self, tx: Transaction) -> CheckResult:
        msg = tx.message
        found: list[Symbol] = []
        froms = msg.get_all("From") or []
        if not froms:
            found.append(Symbol("HDR_MISSING_FROM", "no From header"))
        elif len(froms) > 1:
            found.append(Symbol("HDR_MULTIPLE_FROM", f"{len(froms)} From headers"))
        if msg.get("Date") is None:
            found.append(Symbol("HDR_MISSING_DATE", "no Date header"))
        if msg.get("Message-ID") is None:
            found.append(Symbol("HDR_MISSING_MESSAGE_ID", "no Message-ID header"))
        if malformed := _malformed_addresses(msg):
            # One symbol, as a rule fires once: its score does not grow with the number of
            # broken headers (the reason names each of them).
            found.append(Symbol("HDR_MALFORMED_ADDRESS", "; ".join(malformed)))
        return self.result(*found)


def _malformed_addresses(msg: email.message.Message) -> list[str]:
    """`name: problem` for each address header name with a malformed value, within the
    parsing budgets."""
    found: list[str] = []
    checked = 0
    for name in ADDRESS_HEADERS:
        for value in msg.get_all(name) or []:
            # Unfolded: the parser takes a folded line's CRLF for a defect.
            if checked >= CHECKED_ADDRESS_MAX_CHARS:
                return found
            text = unfold(header_str(value))
            problem = address_problem(name, text, strict=checked < STRICT_PARSER_BUDGET_CHARS)
            checked += len(text)
            if problem is not None:
                found.append(f"{name}: {problem}")
                break
    return found
