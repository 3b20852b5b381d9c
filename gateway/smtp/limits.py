"""Concurrent-session limits of one worker process: in total and per client IP."""

from __future__ import annotations

from collections import Counter

from gateway.smtp import replies


class ConnectionLimiter:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
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
        return None

    def release(self, client_ip: str) -> None:
        self._total -= 1
        self._per_ip[client_ip] -= 1
        if self._per_ip[client_ip] <= 0:
            del self._per_ip[client_ip]

    @property
    def active(self) -> int:
        return self._total
