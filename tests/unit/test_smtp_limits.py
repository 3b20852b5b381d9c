"""Concurrent-session limits: total and per client IP, and what release gives back."""

from __future__ import annotations

from gateway.smtp import replies
from gateway.smtp.limits import ConnectionLimiter


def test_total_and_per_ip_limits() -> None:
    limiter = ConnectionLimiter(max_total=3, max_per_ip=2)
    assert limiter.acquire("192.0.2.1") is None
    assert limiter.acquire("192.0.2.1") is None
    assert limiter.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_IP
    assert limiter.acquire("192.0.2.2") is None
    assert limiter.acquire("192.0.2.3") == replies.TOO_MANY_CONNECTIONS
    assert limiter.active == 3


def test_release_frees_the_slot_and_forgets_idle_ips() -> None:
    limiter = ConnectionLimiter(max_total=1, max_per_ip=1)
    assert limiter.acquire("192.0.2.1") is None
    limiter.release("192.0.2.1")
    assert limiter.active == 0
    assert limiter.acquire("192.0.2.2") is None
