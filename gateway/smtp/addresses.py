"""SMTP paths: splitting MAIL/RCPT arguments, checking senders, and the relay gate.

The relay gate is the one thing that keeps the gateway from being an open relay, so it accepts
only the plainest form of address, `local@domain` with a dot-atom local part and a domain that
is exactly one of `[relay] domains` (case-insensitive). Every form a downstream server might
route somewhere else is refused rather than rewritten:

- `%` hack (`user%other@ours`) and bang paths (`host!user@ours`): some MTAs still route them.
- source routes (`@a,@b:user@ours`): RFC 5321 C says ignore, but ignoring is a rewrite.
- quoted local parts (`"a@b"@ours`): legal, very rare in real mail, and the classic way to
  smuggle `@`, `%` or `!` past a gate that looks at the unquoted text.
- address literals (`user@[127.0.0.1]`), trailing dots (`user@ours.`), empty domains,
  several `@`, and addresses without a domain.

The one address without a domain that is accepted is `<postmaster>` (RFC 5321 4.5.1 says a
server MUST), as postmaster of the first configured domain.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_LOCAL_PART_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_PATH_OCTETS = 256  # RFC 5321 4.5.3.1.3, angle brackets included

# RFC 5322 atext without "%" and "!", the two characters MTAs have used as routing operators.
_ATEXT = r"A-Za-z0-9#$&'*+/=?^_`{|}~\-"
_DOT_ATOM = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# With SMTPUTF8, RFC 6531 adds non-ASCII characters: not the surrogates that stand for bytes
# which were not valid UTF-8, nor the C1 controls and line and paragraph separators (U+0085,
# U+2028, U+2029), which some readers take for line ends in the Received field and the logs.
_UTF8 = r"\u00a0-\u2027\u202a-\ud7ff\ue000-\U0010ffff"
_DOT_ATOM_UTF8 = re.compile(rf"[{_ATEXT}{_UTF8}]+(?:\.[{_ATEXT}{_UTF8}]+)*")
# A sender's local part may use all of RFC 5322 atext (the relay gate's restriction is for
# recipients), or be a quoted string (RFC 5321 qtextSMTP / quoted-pairSMTP).
_SENDER_ATEXT = _ATEXT + "%!"
_SENDER_LOCAL = re.compile(rf"[{_SENDER_ATEXT}]+(?:\.[{_SENDER_ATEXT}]+)*")
_SENDER_LOCAL_UTF8 = re.compile(rf"[{_SENDER_ATEXT}{_UTF8}]+(?:\.[{_SENDER_ATEXT}{_UTF8}]+)*")
_QUOTED_LOCAL = re.compile(rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"')
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LABEL_UTF8 = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN_UTF8 = re.compile(rf"{_LABEL_UTF8}(?:\.{_LABEL_UTF8})*")
_LITERAL = re.compile(r"\[(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|IPv6:[0-9A-Fa-f:.]{2,45})\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_NOT_UTF8 = re.compile(r"[\ud800-\udfff]")  # surrogateescape stand-ins for invalid bytes


class RelayDenied(Exception):
    """A recipient the gateway must not accept; `reason` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PathArgument:
    """A MAIL FROM or RCPT TO argument: the path between the angle brackets and the parameters."""

    path: str
    params: tuple[str, ...]


def split_path_argument(text: str) -> PathArgument | None:
    """`<path> PARAM=VALUE ...` -> PathArgument, or None for a syntax error.

    The closing `>` is found outside quoted strings, so `<"a>b"@x>` does not split early.
    Without angle brackets (sloppy but common clients) the path is the first word.
    """
    text = text.strip()
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return PathArgument(path, tuple(rest.split())) if path else None
    quoted = escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            rest = text[index + 1 :]
            if rest and not rest.startswith(" "):
                return None
            return PathArgument(text[1:index], tuple(rest.split()))
    return None


def strip_source_route(path: str) -> str:
    """`@a,@b:user@x` -> `user@x` (RFC 5321 appendix C: a server should ignore the route).
    A route to no mailbox (`@a:`) stays as it is, to be refused: it is not the null sender."""
    if path.startswith("@") and ":" in path and path.partition(":")[2]:
        return path.partition(":")[2]
    return path


def sender_problem(path: str, smtputf8: bool) -> str | None:
    """Why a MAIL FROM path (route already stripped) is unusable, or None. "" is the null sender."""
    if path == "":
        return None
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_OCTETS:
        return "too long"
    if _CONTROL.search(path):  # never, not even quoted: they break relaying and DSNs
        return "control characters"
    if _CONTROL_OR_SPACE.search(path) and not path.startswith('"'):
        return "control characters or spaces"
    if not path.isascii() and not smtputf8:
        return "non-ASCII without SMTPUTF8"
    if _NOT_UTF8.search(path):
        return "not valid UTF-8"
    local, at, domain = path.rpartition("@")
    if not at or not local or not domain:
        return "not local@domain"
    # RFC 5321 4.1.2 Mailbox. Anything else got a 250 and was lost later: the internal
    # server refuses the path, and the bounce to the same path fails too.
    utf8 = smtputf8 and not path.isascii()
    if not (_SENDER_LOCAL_UTF8 if utf8 else _SENDER_LOCAL).fullmatch(
        local
    ) and not _QUOTED_LOCAL.fullmatch(local):
        return "not a valid local part"
    if len(local.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        return "local part too long"
    if not (_DOMAIN_UTF8 if utf8 else _DOMAIN).fullmatch(domain) and not _LITERAL.fullmatch(domain):
        return "not a valid domain"
    return None


def helo_problem(name: str) -> str | None:
    """Why a HELO/EHLO argument is unusable, or None. Any name is taken (it is only recorded,
    and checks judge it), but not bytes that are invalid UTF-8 or control characters, which
    would follow it into headers, logs and the quarantine index."""
    if _NOT_UTF8.search(name) or _CONTROL_OR_SPACE.search(name):
        return "not a host name"
    if len(name.encode("utf-8")) > MAX_PATH_OCTETS:
        return "too long"
    return None


class RelayGate:
    """Accepts only recipients in the configured domains; see the module docstring."""

    def __init__(self, domains: Iterable[str]) -> None:
        ordered = [d.lower() for d in domains]
        if not ordered:
            # An empty list must never mean "accept everything".
            raise ValueError("the relay gate needs at least one domain")
        self.domains = frozenset(ordered)
        self.postmaster = f"postmaster@{ordered[0]}"

    def accept(self, path: str, smtputf8: bool) -> str:
        """The canonical recipient (domain lower-cased) or RelayDenied with the reason."""
        if not path:
            raise RelayDenied("empty address")
        if path.lower() == "postmaster":
            return self.postmaster
        if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_OCTETS:
            raise RelayDenied("address too long")
        if path.startswith("@"):
            raise RelayDenied("source routes are not accepted")
        if path.startswith('"'):
            raise RelayDenied("quoted local parts are not accepted")
        if path.count("@") != 1:
            raise RelayDenied("an address needs exactly one @ and a domain")
        local, _, domain = path.partition("@")
        if not domain:
            raise RelayDenied("empty domain")
        if domain.startswith("["):
            raise RelayDenied("address literals are not accepted")
        if domain.lower() not in self.domains:
            raise RelayDenied("we do not relay for this domain")
        if "%" in local:
            raise RelayDenied("% routing is not accepted")
        if "!" in local:
            raise RelayDenied("bang paths are not accepted")
        if len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL_PART_OCTETS:
            raise RelayDenied("local part too long")
        pattern = _DOT_ATOM_UTF8 if smtputf8 else _DOT_ATOM
        if not pattern.fullmatch(local):
            raise RelayDenied("malformed local part")
        return f"{local}@{domain.lower()}"
