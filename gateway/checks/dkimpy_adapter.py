"""dkimpy adapted to the gateway, shared by the DKIM and ARC checks: its key lookups go through
our Resolver, and what it only logs is collected as the reason for a failure."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import dkim
import dkim.canonicalization

from gateway.errors import DnsError
from gateway.net.dns import Resolver

_EMPTY_P = re.compile(rb"(?:^|;)\s*p\s*=\s*(?:;|$)")
# Relaxed body canonicalization strips the blanks before each CRLF. dkimpy 1.1.8 does it with
# re.sub(b"[\t ]+\r\n"), which retries from every blank of a run that no CRLF ends: time the
# square of the run, holding the GIL, so the event loop stood still too (100 KB of spaces in
# a line: 16 s; 1 MB: hours). Starting a match only where a run starts makes it linear; what
# it replaces is the same.
_BLANKS_BEFORE_CRLF = re.compile(rb"(?<![\t ])[\t ]++\r\n")


def _strip_trailing_whitespace(content: bytes) -> bytes:
    return _BLANKS_BEFORE_CRLF.sub(b"\r\n", content)


# Dropping the empty lines at the end of the body went back one CRLF per Python step: 5
# million of them took 3.5 s for each signature.
_CRLF_PAIRS_REVERSED = re.compile(rb"(?:\n\r)*+")


def _strip_trailing_lines(content: bytes) -> bytes:
    tail = content[len(content.rstrip(b"\r\n")) :][::-1]
    run = _CRLF_PAIRS_REVERSED.match(tail)  # always matches, if only the empty string
    pairs = len(run.group()) // 2 if run else 0
    if pairs == 0:
        return content + b"\r\n"
    return content[: len(content) - 2 * (pairs - 1)]


dkim.canonicalization.strip_trailing_whitespace = _strip_trailing_whitespace
dkim.canonicalization.strip_trailing_lines = _strip_trailing_lines

# dkimpy's header split and header selection are quadratic too (in Python, so the loop runs
# on, but a thread cannot be stopped): it grows a folded field with bytes += per line (300,000
# continuation lines: 5 s; 25 MB: hours) and looks each h= name up from the bottom of all
# fields (20,000 names over 20,000 fields: 10 s). The same results, in linear time.
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")
_LINE_END = re.compile(rb"\r?\n")


def _rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    headers: list[list[bytes]] = []
    pieces: list[list[bytes]] = []
    lines = _LINE_END.split(message)
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line:
            i += 1  # the empty line ends the header; the body follows it
            break
        if line[0] in (0x09, 0x20):
            pieces[-1].append(line + b"\r\n")  # IndexError before any field, as dkimpy's
        elif (name := _FIELD_NAME.match(line)) is not None:
            headers.append([name.group(1), b""])
            pieces.append([line[name.end(0) :] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line!r}")
        i += 1
    for header, parts in zip(headers, pieces, strict=True):
        header[1] = b"".join(parts)
    return headers, b"\r\n".join(lines[i:])


def _select_headers(headers: list[list[bytes]], include_headers: list[bytes]) -> list[list[bytes]]:
    """For each name in h=, the last field of that name not yet taken, from the bottom up
    (RFC 6376 5.4.2)."""
    positions: dict[bytes, list[int]] = {}
    for index, (name, _) in enumerate(headers):
        positions.setdefault(name.lower(), []).append(index)
    selected = []
    for name in include_headers:
        found = positions.get(name)
        if found:
            selected.append(headers[found.pop()])
    return selected


dkim.rfc822_parse = _rfc822_parse
dkim.select_headers = _select_headers


@dataclass
class KeyLookups:
    """dkimpy's `dnsfunc` over our Resolver; remembers the outcome of the last lookup.

    All lookups of one verification share `dns_time_s`: a thread cannot be stopped, so the
    verification must end by itself about when its check times out, however many keys a
    message names behind a silent DNS server."""

    resolver: Resolver
    dns_time_s: float
    last: str = ""  # "", "missing", "revoked", "dns-error: ..."
    _deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.dns_time_s

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.last = ""
        left = min(timeout, self._deadline - time.monotonic())
        if left <= 0:
            self.last = f"dns-error: no DNS time left of {self.dns_time_s:g}s"
            raise dkim.DnsTimeoutError(self.last)
        try:
            answer = self.resolver.lookup_sync(
                name.decode("ascii", "replace"), "TXT", lifetime_s=left
            )
        except DnsError as exc:
            self.last = f"dns-error: {exc}"
            raise dkim.DnsTimeoutError(str(exc)) from exc
        if not answer.records:
            self.last = "missing"
            return None
        record = answer.records[0].encode("utf-8")
        if _EMPTY_P.search(record):
            self.last = "revoked"
        return record


class LogLines(logging.Handler):
    """Collects what dkimpy logs at warning level and above: its only account of a False."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def private_logger(handler: logging.Handler) -> logging.Logger:
    # A private logger per verification: not registered, so nothing leaks into the app's logs.
    logger = logging.Logger("gateway.checks.dkim.dkimpy", logging.WARNING)
    logger.addHandler(handler)
    return logger
