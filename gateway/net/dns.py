"""The one DNS client: async and blocking lookups over dnspython with a shared, bounded cache.

Every check (and every library a check drives: pyspf, dkimpy) resolves through a `Resolver`,
so no lookup ever falls back to the system resolver or to the internet. Answers are mapped to a
small result type; anything that is not an answer is raised as `DnsTimeout` or `DnsError`.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.resolver

from gateway.config import DnsConfig, parse_hostport
from gateway.errors import DnsError, DnsTimeout
from gateway.threads import FairThreads

DNS_PORT = 53
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class DnsAnswer:
    """The answer to one question. `records` are in presentation format, except that a TXT
    record's strings are joined without quotes (what SPF, DKIM and DMARC read)."""

    status: Literal["ok", "nxdomain", "nodata"]
    records: tuple[str, ...]
    ttl: int


class Resolver:
    """Lookups against `nameservers` ("IP" or "IP:port"; empty = /etc/resolv.conf).

    `timeout_s` bounds one query to one server, `lifetime_s` a whole lookup including retries.
    The async and the blocking path share one thread-safe LRU cache of `cache_entries` answers
    (0 = no cache); dnspython honours TTLs and caches NXDOMAIN/NODATA for the SOA minimum
    (RFC 2308). `blocking_threads` run the libraries that resolve through the blocking path,
    at most `threads_per_client` of them for one client, which waits at most `thread_wait_s`
    for one (then ThreadsBusy).
    """

    def __init__(
        self,
        nameservers: Sequence[str],
        timeout_s: float,
        lifetime_s: float,
        cache_entries: int,
        blocking_threads: int = 16,
        threads_per_client: int = 4,
        thread_wait_s: float = 2.0,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.threads = FairThreads(
            blocking_threads, threads_per_client, thread_wait_s, name="dns-bound"
        )
        self.cache = dns.resolver.LRUCache(cache_entries) if cache_entries > 0 else None
        configure = not nameservers
        self._async = dns.asyncresolver.Resolver(configure=configure)
        self._sync = dns.resolver.Resolver(configure=configure)
        for resolver in (self._async, self._sync):
            if nameservers:
                resolver.nameservers = [_nameserver(ns) for ns in nameservers]
            resolver.timeout = timeout_s
            resolver.lifetime = lifetime_s
            resolver.cache = self.cache

    @classmethod
    def from_config(cls, config: DnsConfig) -> Resolver:
        return cls(
            config.nameservers,
            config.timeout_s,
            config.lifetime_s,
            config.cache_entries,
            config.blocking_threads,
            config.blocking_threads_per_client,
            config.blocking_thread_wait_s,
        )

    async def run_blocking(
        self, client: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`function` (a library that resolves through `lookup_sync`: pyspf, dkimpy) in this
        resolver's own threads, on behalf of `client` (its IP address: the unit of fairness).
        It may wait seconds per lookup on a silent server: in the event loop's default pool,
        32 messages with DKIM signatures against a dead DNS took all the threads the spool,
        the quarantine and the other checks need. Raises ThreadsBusy when `client` gets no
        thread within the configured wait."""
        job = functools.partial(function, *args, **kwargs)
        return await self.threads.run(share_key(client), job)

    async def lookup(self, name: str, rdtype: str, lifetime_s: float | None = None) -> DnsAnswer:
        """Resolve `name`/`rdtype`; raises DnsTimeout, or DnsError for SERVFAIL, REFUSED etc.

        `lifetime_s` lowers the configured lifetime for callers with a smaller budget left.
        """
        try:
            answer = await self._async.resolve(
                name, rdtype, search=False, lifetime=self._lifetime(lifetime_s)
            )
        except dns.exception.DNSException as exc:
            return _negative_or_raise(name, rdtype, exc)
        return _positive(answer)

    def lookup_sync(self, name: str, rdtype: str, lifetime_s: float | None = None) -> DnsAnswer:
        """The same as `lookup`, blocking: for libraries that run in a worker thread."""
        try:
            answer = self._sync.resolve(
                name, rdtype, search=False, lifetime=self._lifetime(lifetime_s)
            )
        except dns.exception.DNSException as exc:
            return _negative_or_raise(name, rdtype, exc)
        return _positive(answer)

    def _lifetime(self, lifetime_s: float | None) -> float:
        if lifetime_s is None:
            return self.lifetime_s
        return max(0.001, min(lifetime_s, self.lifetime_s))


def share_key(client_ip: str) -> str:
    """Whose share of the threads a job counts against: the IPv4 address (also mapped into
    IPv6), or the IPv6 /64: one host given a /64 must not count as 2**64 clients."""
    try:
        address = ipaddress.ip_address(client_ip.partition("%")[0])
    except ValueError:
        return client_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _nameserver(text: str) -> dns.nameserver.Do53Nameserver:
    host, port = parse_hostport(text, DNS_PORT)
    return dns.nameserver.Do53Nameserver(host, port)


def _record_text(rdata: dns.rdata.Rdata) -> str:
    strings = getattr(rdata, "strings", None)
    if rdata.rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF) and strings is not None:
        # Non-UTF-8 bytes become U+FFFD: still non-ASCII, so SPF/DKIM parsers reject them.
        return b"".join(strings).decode("utf-8", "replace")
    return str(rdata.to_text())


def _positive(answer: dns.resolver.Answer) -> DnsAnswer:
    records = tuple(_record_text(rdata) for rdata in answer)
    remaining = int(answer.expiration - time.time())
    return DnsAnswer("ok", records, max(0, remaining))


def _negative_ttl(response: dns.message.Message | None) -> int:
    """RFC 2308 section 5: a negative answer lives min(SOA TTL, SOA minimum)."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


# Raised while the question's name is built, before anything is sent: no such name can exist.
_NOT_A_DNS_NAME = (
    dns.name.EmptyLabel,
    dns.name.LabelTooLong,
    dns.name.NameTooLong,
    dns.name.BadEscape,
    dns.name.IDNAException,
)


def _negative_or_raise(name: str, rdtype: str, exc: dns.exception.DNSException) -> DnsAnswer:
    if isinstance(exc, _NOT_A_DNS_NAME):
        # A label over 63 octets, an empty label, a name over 255: no such name can exist,
        # so none does. (As an error it deferred mail for good: it would never resolve.)
        return DnsAnswer("nxdomain", (), 0)
    if isinstance(exc, dns.resolver.NXDOMAIN):
        responses = list(exc.kwargs.get("responses", {}).values())
        return DnsAnswer("nxdomain", (), _negative_ttl(responses[0] if responses else None))
    if isinstance(exc, dns.resolver.NoAnswer):
        return DnsAnswer("nodata", (), _negative_ttl(exc.kwargs.get("response")))
    question = f"{name}/{rdtype}"
    if isinstance(exc, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        raise DnsTimeout(f"{question}: no answer in time") from exc
    if isinstance(exc, dns.resolver.NoNameservers):
        raise DnsError(f"{question}: {_server_errors(exc)}") from exc
    raise DnsError(f"{question}: {type(exc).__name__}: {exc}") from exc


def _server_errors(exc: dns.resolver.NoNameservers) -> str:
    """'SERVFAIL from 127.0.0.1:5353' for each server that answered with an error rcode."""
    parts = []
    for server, _tcp, _port, error, response in exc.kwargs.get("errors", []):
        what = dns.rcode.to_text(response.rcode()) if response is not None else str(error)
        parts.append(f"{what} from {server}")
    return "; ".join(parts) or "no nameserver answered"
