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


dkim.canonicalization.strip_trailing_whitespace = _strip_trailing_whitespace


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
