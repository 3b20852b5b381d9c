"""dkimpy adapted to the gateway, shared by the DKIM and ARC checks: its key lookups go through
our Resolver, and what it only logs is collected as the reason for a failure."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import dkim

from gateway.errors import DnsError
from gateway.net.dns import Resolver

_EMPTY_P = re.compile(rb"(?:^|;)\s*p\s*=\s*(?:;|$)")


@dataclass
class KeyLookups:
    """dkimpy's `dnsfunc` over our Resolver; remembers the outcome of the last lookup."""

    resolver: Resolver
    last: str = ""  # "", "missing", "revoked", "dns-error: ..."

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.last = ""
        try:
            answer = self.resolver.lookup_sync(name.decode("ascii", "replace"), "TXT")
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
