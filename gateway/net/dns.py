"""The one DNS client: async and blocking lookups over dnspython with a shared, bounded cache.

Every check (and every library a check drives: pyspf, dkimpy) resolves through a `Resolver`,
so no lookup ever falls back to the system resolver or to the internet. Answers are mapped to a
small result type; anything that is not an answer is raised as `DnsTimeout` or `DnsError`.

A resolver that does not answer costs each lookup its whole lifetime: the banner waited for the
DNSBL lookups, MAIL for SPF, DATA for DKIM and DMARC, 9 waits of one `gateway scan` in 17.8 s,
for a 451 that was certain after the first. So `breaker_timeouts` lookups in a row that timed
out while nothing else was answered make the `Breaker` ask the resolver itself a question only
it answers (the root zone's NS, never cached, one query's `timeout_s`):
- it answers: the name was slow (a sender's own name servers can tarpit at will); lookups go on;
- it does not: every lookup fails at once with `DnsTimeout` (which the checks map to temperror)
  for `breaker_open_s`; then the next lookup sets off the same probe again.
While the probe is under way, the session whose lookup timed out (a `LookupScope`: one SMTP
connection, one scanned message) waits for its word before its next lookup, a query's timeout at
most. `breaker_timeouts` = 0 never probes: a session then fails its next lookups at once for
`breaker_open_s` after one of its own timed out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import ipaddress
import logging
import math
import threading
import time
from collections import Counter
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
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from gateway.config import DnsConfig, parse_hostport
from gateway.errors import DnsError, DnsTimeout
from gateway.threads import FairThreads

DNS_PORT = 53
P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger(__name__)


class LookupScope:
    """The lookups of one SMTP session or one scanned message. Tasks and threads started for
    the session share it (a context variable; `in_thread` copies the context)."""

    def __init__(self) -> None:
        # When a lookup of it that timed out had begun, with nothing answered since (clock()).
        self.timed_out_since: float | None = None
        self.timed_out_at: float | None = None  # when it timed out
        self.reported = False  # its fast failures were logged (once)


_scope: contextvars.ContextVar[LookupScope | None] = contextvars.ContextVar(
    "dns_lookup_scope", default=None
)


def begin_scope() -> LookupScope:
    """Start a new scope for the lookups of the current task (and what it starts)."""
    scope = LookupScope()
    _scope.set(scope)
    return scope


@dataclass(frozen=True)
class Ticket:
    """An admitted lookup: when it started."""

    started_at: float


def _in_background(job: Callable[[], None]) -> None:
    threading.Thread(target=job, name="dns-probe", daemon=True).start()


class Breaker:
    """Process-wide. `timeouts` lookups in a row timed out with nothing answered between:
    `probe` (does the resolver answer at all?) runs through `run_probe` (a thread: lookups
    also run on the event loop); its no opens the breaker for `open_s`, its yes closes it.
    `timeouts` = 0: never probes, never opens. Thread-safe. `counts`: timeouts, answered,
    probes, opened, failed_fast_breaker, failed_fast_session."""

    def __init__(
        self,
        timeouts: int,
        open_s: float,
        probe: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        run_probe: Callable[[Callable[[], None]], None] = _in_background,
    ) -> None:
        self.timeouts = timeouts
        self.open_s = open_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._probe = probe
        self._run_probe = run_probe
        self._lock = threading.Lock()
        self._in_a_row = 0
        self._open_until: float | None = None  # None: closed
        self._probing: concurrent.futures.Future[bool] | None = None  # the probe under way
        self._answered_at = -math.inf  # clock() of the last answer (a lookup's or the probe's)

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def pending_probe(self) -> concurrent.futures.Future[bool] | None:
        """The probe under way, if this session should hear its word before its next lookup
        (one of its lookups timed out, nothing was answered since)."""
        scope = _scope.get()
        with self._lock:
            if scope is None or scope.timed_out_since is None or self._probing is None:
                return None
            return None if self._answered_at > scope.timed_out_since else self._probing

    def admit(self, question: str) -> Ticket:
        """Raise DnsTimeout if this lookup must fail at once; else its ticket."""
        now = self.clock()
        scope = _scope.get()
        probe = False
        with self._lock:
            if self._open_until is not None:
                self.counts["failed_fast_breaker"] += 1
                probe = now >= self._open_until and self._probing is None
                if probe:
                    self._probing = _running_future()
            elif scope is not None and self._session_waits_in_vain(scope, now):
                self.counts["failed_fast_session"] += 1
                if not scope.reported:
                    scope.reported = True
                    log.info(
                        "DNS: a lookup of this session timed out: its next lookups fail at "
                        "once for %gs (%s)",
                        self.open_s,
                        question,
                    )
                raise DnsTimeout(f"{question}: not asked, an earlier lookup timed out")
            else:
                return Ticket(now)
        if probe:
            self._run_probe(self._check_resolver)
        raise DnsTimeout(f"{question}: not asked, the DNS server is not answering")

    def _session_waits_in_vain(self, scope: LookupScope, now: float) -> bool:
        """Whether a session whose lookup timed out should not ask: nothing has answered since
        (no lookup, no probe), within open_s. Called with the lock held."""
        since, at = scope.timed_out_since, scope.timed_out_at
        if since is None or at is None or now - at >= self.open_s:
            return False
        if self._answered_at > since:  # the resolver answered since: that name was slow
            scope.timed_out_since = scope.timed_out_at = None
            return False
        return True

    def answered(self, ticket: Ticket) -> None:
        with self._lock:
            self.counts["answered"] += 1
            self._in_a_row = 0
            self._answered_at = self.clock()

    def timed_out(self, ticket: Ticket) -> None:
        now = self.clock()
        scope = _scope.get()
        with self._lock:
            self.counts["timeouts"] += 1
            if self._answered_at > ticket.started_at:
                return  # something was answered meanwhile: the server is there, the name slow
            self._in_a_row += 1
            if scope is not None:
                scope.timed_out_since, scope.timed_out_at = ticket.started_at, now
            probe = (
                self._open_until is None
                and self._probing is None
                and bool(self.timeouts)
                and self._in_a_row >= self.timeouts
            )
            if probe:
                self._probing = _running_future()
        if probe:
            self._run_probe(self._check_resolver)

    def _check_resolver(self) -> None:
        """Ask `probe`; close or open by its answer, and tell whoever waits for it."""
        alive = False
        try:
            alive = self._probe()
        finally:
            with self._lock:
                self.counts["probes"] += 1
                probing, self._probing = self._probing, None
                if alive:
                    self._in_a_row = 0
                    self._answered_at = self.clock()
                    if self._open_until is not None:
                        self._open_until = None
                        log.warning("DNS answers again: lookups are asked again")
                else:
                    if self._open_until is None:
                        self.counts["opened"] += 1
                        log.warning(
                            "DNS: lookups time out and the resolver does not answer either: "
                            "every lookup fails at once (temperror) for %gs, then it is asked "
                            "again",
                            self.open_s,
                        )
                    self._open_until = self.clock() + self.open_s
            if probing is not None:
                probing.set_result(alive)

    def settle(
        self, ticket: Ticket, exc: dns.exception.DNSException, result: Callable[[], DnsAnswer]
    ) -> DnsAnswer:
        """`result()` for a lookup that ended in `exc`: a negative answer or an error raised,
        and the breaker told which (a name that cannot exist was never asked: neither)."""
        if isinstance(exc, _NOT_A_DNS_NAME):
            return result()
        try:
            answer = result()
        except DnsTimeout:
            self.timed_out(ticket)
            raise
        except DnsError:
            self.answered(ticket)  # SERVFAIL, REFUSED: the server is there
            raise
        self.answered(ticket)
        return answer


def _running_future() -> concurrent.futures.Future[bool]:
    """A future for the probe's word, marked running: a waiter that gives up cannot cancel it."""
    future: concurrent.futures.Future[bool] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()
    return future


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
        breaker_timeouts: int = 1,
        breaker_open_s: float = 30.0,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.timeout_s = timeout_s
        self.breaker = Breaker(breaker_timeouts, breaker_open_s, self._resolver_answers)
        self.threads = FairThreads(
            blocking_threads, threads_per_client, thread_wait_s, name="dns-bound"
        )
        self.cache = dns.resolver.LRUCache(cache_entries) if cache_entries > 0 else None
        configure = not nameservers
        self._async = dns.asyncresolver.Resolver(configure=configure)
        self._sync = dns.resolver.Resolver(configure=configure)
        self._prober = dns.resolver.Resolver(configure=configure)  # uncached, one query
        for resolver in (self._async, self._sync, self._prober):
            if nameservers:
                resolver.nameservers = [_nameserver(ns) for ns in nameservers]
            resolver.timeout = timeout_s
            resolver.lifetime = lifetime_s
            resolver.cache = self.cache
        self._prober.lifetime, self._prober.cache = timeout_s, None

    def _resolver_answers(self) -> bool:
        """Whether the resolver answers at all: the root zone's NS, which any resolver knows
        (or refuses) itself, so no name server a sender chose can slow it down."""
        try:
            self._prober.resolve(".", "NS", search=False)
        except dns.exception.Timeout:
            return False
        except dns.exception.DNSException:
            return True  # REFUSED, SERVFAIL, NXDOMAIN, no answer: it is there
        return True

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
            config.breaker_timeouts,
            config.breaker_open_s,
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
        if (probe := self.breaker.pending_probe()) is not None:
            # Not wait_for: giving up must not cancel the probe others wait for too.
            await asyncio.wait({asyncio.wrap_future(probe)}, timeout=self.timeout_s)
        ticket = self._admit(name, rdtype)
        try:
            answer = await self._async.resolve(
                name, rdtype, search=False, lifetime=self._lifetime(lifetime_s)
            )
        except dns.exception.DNSException as exc:
            return self._failed(ticket, exc, name, rdtype)
        except BaseException:  # cancelled (a check's own timeout), or not a DNS outcome
            if ticket is not None:
                self._gave_up(ticket)
            raise
        if ticket is not None:
            self.breaker.answered(ticket)
        return _positive(answer)

    def lookup_sync(self, name: str, rdtype: str, lifetime_s: float | None = None) -> DnsAnswer:
        """The same as `lookup`, blocking: for libraries that run in a worker thread."""
        if (probe := self.breaker.pending_probe()) is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                probe.result(timeout=self.timeout_s)
        ticket = self._admit(name, rdtype)
        try:
            answer = self._sync.resolve(
                name, rdtype, search=False, lifetime=self._lifetime(lifetime_s)
            )
        except dns.exception.DNSException as exc:
            return self._failed(ticket, exc, name, rdtype)
        except BaseException:
            if ticket is not None:
                self._gave_up(ticket)
            raise
        if ticket is not None:
            self.breaker.answered(ticket)
        return _positive(answer)

    def _gave_up(self, ticket: Ticket) -> None:
        """A lookup that ended without a DNS outcome. Cancelled after a whole query timeout
        without an answer, it is a timeout: the DNSBL check's own 5 s limit cancelled its
        lookups just before their 5 s lifetime (dnspython sleeps its backoff past it), and
        a dead server went unnoticed at connect."""
        if self.breaker.clock() - ticket.started_at >= self.timeout_s:
            self.breaker.timed_out(ticket)

    def _admit(self, name: str, rdtype: str) -> Ticket | None:
        """None for an answer the cache has (given even while lookups fail fast: no server is
        asked), else the breaker's ticket, or DnsTimeout raised at once."""
        return None if self._cached(name, rdtype) else self.breaker.admit(f"{name}/{rdtype}")

    def _cached(self, name: str, rdtype: str) -> bool:
        if self.cache is None:
            return False
        try:
            qname = dns.name.from_text(name)
            kind = dns.rdatatype.from_text(rdtype)
        except (dns.exception.DNSException, ValueError):
            return False  # resolve() raises it again, as before
        if self.cache.get((qname, kind, dns.rdataclass.IN)) is not None:
            return True
        negative = self.cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        return negative is not None and negative.response.rcode() == dns.rcode.NXDOMAIN

    def _failed(
        self, ticket: Ticket | None, exc: dns.exception.DNSException, name: str, rdtype: str
    ) -> DnsAnswer:
        negative = functools.partial(_negative_or_raise, name, rdtype, exc)
        return negative() if ticket is None else self.breaker.settle(ticket, exc, negative)

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
