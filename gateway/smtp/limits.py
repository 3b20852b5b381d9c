"""Concurrent-session limits of one worker process: in total and per client IP."""

from __future__ import annotations

import logging
from collections import Counter

from gateway.smtp import replies

log = logging.getLogger(__name__)


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_ip: int, stress_sessions: int | None = None) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        # From this many sessions on the worker is under stress (see `under_stress`).
        self.stress_sessions = max_total if stress_sessions is None else stress_sessions
        self._per_ip: Counter[str] = Counter()
        self._total = 0

    def acquire(self, client_ip: str) -> str | None:
        """Count a new session; return the refusal reply instead when a limit is reached."""
        if self._total >= self.max_total:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip[client_ip] >= self.max_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        self._total += 1
        self._per_ip[client_ip] += 1
        if self._total == self.stress_sessions:
            log.warning(
                "%d sessions: under stress, idle sessions get the short stress timeout",
                self._total,
            )
        return None

    def release(self, client_ip: str) -> None:
        self._total -= 1
        self._per_ip[client_ip] -= 1
        if self._per_ip[client_ip] <= 0:
            del self._per_ip[client_ip]

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

    def __init__(self, limit_bytes: int, per_ip_limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.per_ip_limit_bytes = per_ip_limit_bytes
        self.held_bytes = 0
        self._per_ip: Counter[str] = Counter()

    def account(self, client_ip: str) -> MemoryAccount:
        return MemoryAccount(self, client_ip)

    def free_bytes(self, client_ip: str) -> int:
        return min(
            self.limit_bytes - self.held_bytes,
            self.per_ip_limit_bytes - self._per_ip[client_ip],
        )

    def take(self, client_ip: str, n: int) -> bool:
        """Hold `n` more bytes for `client_ip` if they fit under both limits."""
        if n > self.free_bytes(client_ip):
            return False
        self.held_bytes += n
        self._per_ip[client_ip] += n
        return True

    def give_back(self, client_ip: str, n: int) -> None:
        self.held_bytes -= n
        self._per_ip[client_ip] -= n
        if self._per_ip[client_ip] <= 0:
            del self._per_ip[client_ip]


class MemoryAccount:
    """One client's view of the worker's MessageMemory."""

    def __init__(self, memory: MessageMemory, client_ip: str) -> None:
        self.memory = memory
        self.client_ip = client_ip

    @property
    def free_bytes(self) -> int:
        return self.memory.free_bytes(self.client_ip)

    def take(self, n: int) -> bool:
        return self.memory.take(self.client_ip, n)

    def give_back(self, n: int) -> None:
        self.memory.give_back(self.client_ip, n)
