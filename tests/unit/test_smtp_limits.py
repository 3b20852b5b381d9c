"""Concurrent-session and message-memory limits: total and per client IP, and what release
gives back."""

from __future__ import annotations

import pytest

from gateway.smtp import replies
from gateway.smtp.limits import ConnectionLimiter, MessageMemory, client_key


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


def test_message_memory_is_bounded_in_total_and_per_ip() -> None:
    memory = MessageMemory(limit_bytes=300, per_ip_limit_bytes=200)
    first, same_ip, other_ip = (memory.account(ip) for ip in ("192.0.2.1",) * 2 + ("192.0.2.2",))
    assert first.take(150)
    assert same_ip.free_bytes == 50
    assert not same_ip.take(51)  # the IP's share
    assert other_ip.free_bytes == 150
    assert other_ip.take(150)
    assert not same_ip.take(1) and not memory.account("192.0.2.3").take(1)  # the total
    first.give_back(150)
    assert memory.account("192.0.2.3").free_bytes == 150
    other_ip.give_back(150)
    assert memory.held_bytes == 0 and memory.free_bytes("192.0.2.1") == 200


@pytest.mark.parametrize(
    ("client_ip", "prefix", "key"),
    [
        ("192.0.2.1", 64, "192.0.2.1"),
        ("::ffff:192.0.2.1", 64, "192.0.2.1"),  # from a dual-stack socket: the same client
        ("2001:db8:1:2:aaaa::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::7", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
        ("fe80::1%eth0", 64, "fe80::/64"),  # a scope id: the link's /64 all the same
        ("not-an-address", 64, "not-an-address"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_network(
    client_ip: str, prefix: int, key: str
) -> None:
    assert client_key(client_ip, prefix) == key


def test_one_ipv6_network_shares_the_per_ip_limits() -> None:
    limiter = ConnectionLimiter(max_total=10, max_per_ip=2, ipv6_prefix_length=64)
    assert limiter.acquire("2001:db8::1") is None
    assert limiter.acquire("2001:db8::2") is None
    assert limiter.acquire("2001:db8::3") == replies.TOO_MANY_CONNECTIONS_FROM_IP
    assert limiter.acquire("2001:db8:0:1::1") is None  # the next /64 is another client
    limiter.release("2001:db8::2")
    assert limiter.acquire("2001:db8::4") is None
    memory = MessageMemory(limit_bytes=300, per_ip_limit_bytes=100, ipv6_prefix_length=64)
    assert memory.account("2001:db8::1").take(100)
    assert memory.free_bytes("2001:db8::ffff") == 0
    assert memory.account("::ffff:192.0.2.1").take(100)
    assert memory.free_bytes("192.0.2.1") == 0
