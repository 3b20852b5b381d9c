"""Concurrent-session limits of one worker process: in total and per client IP."""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable

from gateway.dnslists import client_address
from gateway.smtp import replies

log = logging.getLogger(__name__)


def client_key(client_ip: str, ipv6_prefix_length: int) -> str:
    """What a per-IP limit counts a client under: its IPv4 address (also when it comes
    mapped into IPv6, ::ffff:192.0.2.1, from a dual-stack socket), or its IPv6 network of
    `ipv6_prefix_length` bits: one host given a /64 must not count as 2**64 clients."""
    try:
        address = client_address(client_ip.partition("%")[0])  # fe80::1%eth0: a /64 too
        if isinstance(address, ipaddress.IPv6Address):
            network = ipaddress.IPv6Network((address, ipv6_prefix_length), strict=False)
            return str(network)
        return str(address)
    except ValueError:  # not an address (a Unix socket): counted as it is
        return client_ip


class ConnectionLimiter:
    def __init__(
        self,
        max_total: int,
        max_per_ip: int,
        stress_sessions: int | None = None,
        ipv6_prefix_length: int = 64,
        on_stress: Callable[[], None] | None = None,
    ) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.on_stress = on_stress  # called when the worker comes under stress
        self.ipv6_prefix_length = ipv6_prefix_length
        # From this many sessions on the worker is under stress (see `under_stress`).
        self.stress_sessions = max_total if stress_sessions is None else stress_sessions
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    def acquire(self, client_ip: str) -> str | None:
        """Count a new session; return the refusal reply instead when a limit is reached."""
        key = client_key(client_ip, self.ipv6_prefix_length)
        if self._total >= self.max_total:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip[key] >= self.max_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        self._total += 1
        self._per_ip[key] += 1
        if self._total == self.stress_sessions:
            log.warning(
                "%d sessions: under stress, idle sessions get the short stress timeout",
                self._total,
            )
            if self.on_stress is not None:
                self.on_stress()
        return None

    def release(self, client_ip: str) -> None:
        key = client_key(client_ip, self.ipv6_prefix_length)
        self._total -= 1
        self._per_ip[key] -= 1
        if self._per_ip[key] <= 0:
            del self._per_ip[key]

    @property
    def active(self) -> int:
        return self._total

    @property
    def under_stress(self) -> bool:
        """Most sessions are taken: slow or idle clients (a slowloris holding every slot, or
        just a flood) then get a short idle timeout, as Postfix's stress-dependent one."""
        return self._total >= self.stress_sessions


class MessageMemory:
    """Bytes of message data one worker process holds at once while receiving and checking
    messages: over all sessions, and over the sessions of one client IP. Past a limit a
    message is refused for now (452): 25 MB messages cost about 100 MB each while checked, and
    500 connections could ask for 50 GB. The per-IP share keeps one client from filling it."""

    def __init__(
        self, limit_bytes: int, per_ip_limit_bytes: int, ipv6_prefix_length: int = 64
    ) -> None:
        self.limit_bytes = limit_bytes
        self.per_ip_limit_bytes = per_ip_limit_bytes
        self.ipv6_prefix_length = ipv6_prefix_length
        self.held_bytes = 0
        self._per_client: Counter[str] = Counter()

    def account(self, client_ip: str) -> MemoryAccount:
        return MemoryAccount(self, client_key(client_ip, self.ipv6_prefix_length))

    def free_bytes(self, client_ip: str) -> int:
        return self.free_for_key(client_key(client_ip, self.ipv6_prefix_length))

    def free_for_key(self, key: str) -> int:
        return min(
            self.limit_bytes - self.held_bytes, self.per_ip_limit_bytes - self._per_client[key]
        )

    def take_for_key(self, key: str, n: int) -> bool:
        if n > self.free_for_key(key):
            return False
        self.held_bytes += n
        self._per_client[key] += n
        return True

    def give_back_for_key(self, key: str, n: int) -> None:
        self.held_bytes -= n
        self._per_client[key] -= n
        if self._per_client[key] <= 0:
            del self._per_client[key]


class MemoryAccount:
    """One client's share of the worker's MessageMemory (`key` from `client_key`)."""

    def __init__(self, memory: MessageMemory, key: str) -> None:
        self.memory = memory
        self.key = key

    @property
    def free_bytes(self) -> int:
        return self.memory.free_for_key(self.key)

    def take(self, n: int) -> bool:
        """Hold `n` more bytes if they fit under both limits."""
        return self.memory.take_for_key(self.key, n)

    def give_back(self, n: int) -> None:
        self.memory.give_back_for_key(self.key, n)
